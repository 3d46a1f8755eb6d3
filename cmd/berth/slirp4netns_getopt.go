package main

import (
	"fmt"
	"strings"
)

// The command lines of slirp4netns and pasta are getopt_long(3)'s: -x VALUE, -xVALUE,
// grouped short flags (-c6), --long VALUE, --long=VALUE, "--" ending the options.
// Container engines pass them in each of these forms, so berth reads them the same way
// (Go's flag package would take -enable-ipv6 and refuse -c6).

// gnuOpt is one option: its short letter (0: none) and long name ("": none).
type gnuOpt struct {
	short  byte
	long   string
	hasArg bool
	// optionalArg: only --long=VALUE gives a value, as getopt_long's optional_argument.
	optionalArg bool
	set         func(value string) error
}

// gnuParse parses args against opts. permute: options may follow operands, as GNU
// getopt allows by default (slirp4netns); otherwise the first operand ends the options
// (pasta, whose operands may be a COMMAND with options of its own). It returns the
// operands in order.
func gnuParse(opts []gnuOpt, args []string, permute bool) ([]string, error) {
	var operands []string
	byShort := func(c byte) *gnuOpt {
		for i := range opts {
			if opts[i].short == c {
				return &opts[i]
			}
		}
		return nil
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			return append(operands, args[i+1:]...), nil
		case strings.HasPrefix(a, "--"):
			name, val, hasVal := strings.Cut(a[2:], "=")
			var o *gnuOpt
			// getopt_long accepts an unambiguous prefix of a long name.
			var prefixed []*gnuOpt
			for j := range opts {
				switch {
				case opts[j].long == "":
				case opts[j].long == name:
					o = &opts[j]
				case strings.HasPrefix(opts[j].long, name):
					prefixed = append(prefixed, &opts[j])
				}
			}
			if o == nil && len(prefixed) == 1 {
				o = prefixed[0]
			}
			if o == nil {
				if len(prefixed) > 1 {
					return nil, fmt.Errorf("option '--%s' is ambiguous", name)
				}
				return nil, fmt.Errorf("unrecognized option '--%s'", name)
			}
			switch {
			case o.hasArg && !hasVal:
				if i+1 >= len(args) {
					return nil, fmt.Errorf("option '--%s' requires an argument", o.long)
				}
				i++
				val = args[i]
			case !o.hasArg && !o.optionalArg && hasVal:
				return nil, fmt.Errorf("option '--%s' doesn't allow an argument", o.long)
			}
			if err := o.set(val); err != nil {
				return nil, fmt.Errorf("--%s: %w", o.long, err)
			}
		case len(a) > 1 && a[0] == '-':
			for k := 1; k < len(a); k++ {
				o := byShort(a[k])
				if o == nil {
					return nil, fmt.Errorf("invalid option -- '%c'", a[k])
				}
				val := ""
				if o.hasArg {
					if k+1 < len(a) {
						val = a[k+1:]
					} else if i+1 < len(args) {
						i++
						val = args[i]
					} else {
						return nil, fmt.Errorf("option requires an argument -- '%c'", o.short)
					}
					k = len(a)
				}
				if err := o.set(val); err != nil {
					return nil, fmt.Errorf("-%c: %w", o.short, err)
				}
			}
		default:
			if !permute {
				return append(operands, args[i:]...), nil
			}
			operands = append(operands, a)
		}
	}
	return operands, nil
}
