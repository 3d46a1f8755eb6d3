package main

// berth as pesto: pesto's command line (pesto(1)), talking to berth's pasta over the
// control socket pasta's -c names. rootlesskit's pesto port driver runs
//
//	pesto -A --tcp-ports=0.0.0.0/8080:80 SOCKET
//	pesto -D --udp-ports=::/5353:53 SOCKET
//
// -A and -D switch between adding and deleting for the specifications after them;
// with none given pesto adds; -s shows the forwards before and after; with no
// specification at all it shows them.

import (
	"errors"
	"fmt"
)

const pestoUsage = "pesto [-A|--add] [-D|--delete] [-t|-u|-T|-U SPEC]... [-s|--show] PATH"

const pestoVersion = "pesto (berth) 2026_07_16.berth\n"

const pestoHelp = `Usage: pesto [OPTION]... PATH
Shows and changes the port forwards of berth running as pasta with -c PATH.

  -A, --add             add the specifications that follow (the default)
  -D, --delete          delete the specifications that follow
  -t, --tcp-ports SPEC  TCP forwards, as pasta's -t
  -u, --udp-ports SPEC  UDP forwards, as pasta's -u
  -T, --tcp-ns SPEC     TCP forwards from the namespace's loopback to the
                        host's, as pasta's -T (no auto)
  -U, --udp-ns SPEC     UDP forwards from the namespace's loopback, as -U
  -s, --show            show the forwards before and after the changes
  -d, --debug           accepted
  -h, --help            this help
      --version         the version
`

type pestoOp struct {
	op, proto, spec string
	ns              bool // -T or -U
}

func runPesto(args []string) int {
	var ops []pestoOp
	op := "add"
	var show, help, version bool
	flag := func(p *bool) func(string) error { return func(string) error { *p = true; return nil } }
	spec := func(proto string, ns bool) func(string) error {
		return func(v string) error { ops = append(ops, pestoOp{op, proto, v, ns}); return nil }
	}
	opts := []gnuOpt{
		{short: 'A', long: "add", set: func(string) error { op = "add"; return nil }},
		{short: 'D', long: "delete", set: func(string) error { op = "delete"; return nil }},
		{short: 't', long: "tcp-ports", hasArg: true, set: spec("tcp", false)},
		{short: 'u', long: "udp-ports", hasArg: true, set: spec("udp", false)},
		{short: 'T', long: "tcp-ns", hasArg: true, set: spec("tcp", true)},
		{short: 'U', long: "udp-ns", hasArg: true, set: spec("udp", true)},
		{short: 's', long: "show", set: flag(&show)},
		{short: 'd', long: "debug", set: func(string) error { return nil }},
		{short: 'h', long: "help", set: flag(&help)},
		{long: "version", set: flag(&version)},
	}
	operands, err := gnuParse(opts, args, true)
	switch {
	case err == nil && help:
		fmt.Fprint(stdout, pestoHelp)
		return exitOK
	case err == nil && version:
		fmt.Fprint(stdout, pestoVersion)
		return exitOK
	case err == nil && len(operands) != 1:
		err = errors.New("want one PATH, the control socket of pasta's -c")
	}
	if err != nil {
		fmt.Fprintf(stderr, "pesto: %v\nusage: %s\n", err, pestoUsage)
		return exitFailure
	}
	path := operands[0]
	showList := func(fwds []string) {
		for _, f := range fwds {
			fmt.Fprintln(stdout, f)
		}
	}
	if show || len(ops) == 0 {
		r, err := pastaCall(path, pastaRequest{Op: "list"})
		if err == nil && r.Error != "" {
			err = errors.New(r.Error)
		}
		if err != nil {
			fmt.Fprintf(stderr, "pesto: %v\n", err)
			return exitFailure
		}
		showList(r.Forwards)
		if len(ops) == 0 {
			return exitOK
		}
	}
	var last []string
	for _, o := range ops {
		r, err := pastaCall(path, pastaRequest{Op: o.op, Proto: o.proto, NS: o.ns, Spec: o.spec})
		if err == nil && r.Error != "" {
			err = errors.New(r.Error)
		}
		if err != nil {
			proto := o.proto
			if o.ns {
				proto += "-ns"
			}
			fmt.Fprintf(stderr, "pesto: %s %s %s: %v\n", o.op, proto, o.spec, err)
			return exitFailure
		}
		last = r.Forwards
	}
	if show {
		showList(last)
	}
	return exitOK
}
