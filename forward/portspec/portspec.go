// Package portspec reads the port forwarding specifications that pasta(1) and pesto(1)
// take after -t, -u, -T and -U, so that berth can stand in for pasta on the command
// line container engines use:
//
//	none                      no forwards
//	[ADDR[%IFACE]/]PORTS      PORTS on ADDR (every address when left out or "*")
//
// where PORTS is "all", "auto", or a comma-separated list of
//
//	FIRST[-LAST][:[TOADDR/]TOFIRST[-TOLAST]]   include a range (target range as long)
//	FIRST[-LAST]:TOADDR                        include a range, to another address
//	~FIRST[-LAST]                              exclude a range
//
// Exclusions win over inclusions; a list of exclusions alone, or "all", means every
// port outside the ephemeral range that is not excluded; "auto" means only the ports
// that a program in the namespace listens on (pasta scans /proc/net/tcp for them).
// IPv6 addresses may be bracketed.
package portspec

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Range is an inclusive range of port numbers, First ≤ Last.
type Range struct {
	First, Last uint16 // the first and the last port of the range
}

// Len is how many ports the range holds.
func (r Range) Len() int { return int(r.Last) - int(r.First) + 1 }

// Contains reports whether p is in the range.
func (r Range) Contains(p uint16) bool { return p >= r.First && p <= r.Last }

// String formats r as Parse reads it: FIRST, or FIRST-LAST.
func (r Range) String() string {
	if r.First == r.Last {
		return strconv.Itoa(int(r.First))
	}
	return strconv.Itoa(int(r.First)) + "-" + strconv.Itoa(int(r.Last))
}

// Rule is one included range: host ports Listen go to the namespace's ports Target
// (the same length: port Listen.First+i goes to Target.First+i).
type Rule struct {
	Listen Range // the host's ports
	Target Range // the namespace's ports, as many as Listen
	// ToAddr is the target address in the namespace; zero means the namespace's own
	// address (of the client's family).
	ToAddr netip.Addr
}

// Spec is one parsed specification.
type Spec struct {
	// None: "none", no forwards at all (every other field is zero).
	None bool
	// Addr is the host address to listen on; zero means every address (both families).
	Addr netip.Addr
	// Iface is the host interface to bind to (SO_BINDTODEVICE), "" for any.
	Iface string
	// All: every port outside the ephemeral range and not excluded ("all", or only
	// exclusions given). AllTo is all's target address, zero for the namespace's.
	All   bool
	AllTo netip.Addr
	// Auto: forward only the ports the namespace listens on.
	Auto bool
	// Include and Exclude are the ranges in the order given.
	Include []Rule
	Exclude []Range
}

// ErrSyntax is wrapped by every error Parse returns.
var ErrSyntax = errors.New("invalid port specifier")

// Parse reads a specification (see the package comment). Errors wrap ErrSyntax and
// quote s.
func Parse(s string) (Spec, error) {
	bad := func(why string) (Spec, error) {
		return Spec{}, fmt.Errorf("%w %q: %s", ErrSyntax, s, why)
	}
	if s == "none" {
		return Spec{None: true}, nil
	}
	var sp Spec
	rest := s
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		if a, ifc, ok := parseAddrIface(rest[:i]); ok {
			sp.Addr, sp.Iface = a, ifc
			rest = rest[i+1:]
		}
	}
	if rest == "" {
		return bad("no ports")
	}
	onlyExcl := true
	for _, chunk := range strings.Split(rest, ",") {
		switch {
		case chunk == "all" || strings.HasPrefix(chunk, "all:"):
			sp.All = true
			if t, ok := strings.CutPrefix(chunk, "all:"); ok {
				a, err := parseAddr(t)
				if err != nil {
					return bad("bad target address after all:")
				}
				sp.AllTo = a
			}
		case chunk == "auto":
			sp.Auto = true
		case strings.HasPrefix(chunk, "~"):
			r, err := parseRange(chunk[1:])
			if err != nil {
				return bad(err.Error())
			}
			sp.Exclude = append(sp.Exclude, r)
		default:
			r, err := parseRule(chunk)
			if err != nil {
				return bad(err.Error())
			}
			onlyExcl = false
			sp.Include = append(sp.Include, r)
		}
	}
	if onlyExcl {
		// pasta: "Specifying excluded ranges only implies that all other
		// non-ephemeral ports are forwarded"; so does auto alone, which then
		// forwards whatever the namespace binds.
		sp.All = true
	}
	if len(sp.Iface) >= 16 || sp.Iface == "." || sp.Iface == ".." || strings.ContainsAny(sp.Iface, "/ \t\n") {
		return bad("bad interface name")
	}
	return sp, nil
}

// parseAddrIface reads what may precede the first '/': ADDR, "*", or nothing, then
// optionally %IFACE.
func parseAddrIface(s string) (netip.Addr, string, bool) {
	addr, ifc, hasIf := strings.Cut(s, "%")
	if hasIf && ifc == "" {
		return netip.Addr{}, "", false
	}
	if addr == "" || addr == "*" {
		return netip.Addr{}, ifc, true
	}
	a, err := parseAddr(addr)
	if err != nil {
		return netip.Addr{}, "", false
	}
	return a, ifc, true
}

// parseAddr reads an IPv4 or IPv6 address, optionally in brackets, without a zone.
func parseAddr(s string) (netip.Addr, error) {
	if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		s = s[1 : len(s)-1]
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, err
	}
	if a.Zone() != "" {
		return netip.Addr{}, errors.New("zones are not allowed")
	}
	return a.Unmap(), nil
}

// parseRange reads FIRST[-LAST].
func parseRange(s string) (Range, error) {
	f, l, dash := strings.Cut(s, "-")
	first, err := parsePort(f)
	if err != nil {
		return Range{}, err
	}
	last := first
	if dash {
		if last, err = parsePort(l); err != nil {
			return Range{}, err
		}
	}
	if last < first {
		return Range{}, fmt.Errorf("range %s ends before it starts", s)
	}
	return Range{first, last}, nil
}

func parsePort(s string) (uint16, error) {
	// Digits only: strconv would take a sign.
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, fmt.Errorf("bad port %q", s)
	}
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("port %q out of range 1-65535", s)
	}
	return uint16(n), nil
}

// parseRule reads FIRST[-LAST][:[TOADDR/]TOFIRST[-TOLAST]] or FIRST[-LAST]:TOADDR.
func parseRule(s string) (Rule, error) {
	l, target, hasTarget := strings.Cut(s, ":")
	lr, err := parseRange(l)
	if err != nil {
		return Rule{}, err
	}
	r := Rule{Listen: lr, Target: lr}
	if !hasTarget {
		return r, nil
	}
	// The target address may be IPv6 and hold colons: everything after the first
	// colon is the target.
	if i := strings.LastIndexByte(target, '/'); i >= 0 {
		a, err := parseAddr(target[:i])
		if err != nil {
			return Rule{}, fmt.Errorf("bad target address %q", target[:i])
		}
		r.ToAddr = a
		target = target[i+1:]
	} else if a, err := parseAddr(target); err == nil {
		r.ToAddr = a
		return r, nil
	}
	tr, err := parseRange(target)
	if err != nil {
		return Rule{}, err
	}
	if tr.Len() != lr.Len() {
		return Rule{}, fmt.Errorf("target range %s is not as long as %s", tr, lr)
	}
	r.Target = tr
	return r, nil
}

// String formats s so that Parse reads it back as an equal Spec.
func (s Spec) String() string {
	if s.None {
		return "none"
	}
	var b strings.Builder
	if s.Addr.IsValid() || s.Iface != "" {
		if s.Addr.IsValid() {
			b.WriteString(s.Addr.String())
		}
		if s.Iface != "" {
			b.WriteString("%" + s.Iface)
		}
		b.WriteByte('/')
	}
	var chunks []string
	// all is written only when Parse would not infer it from the chunks.
	if s.All && (len(s.Include) > 0 || s.AllTo.IsValid() || (len(s.Exclude) == 0 && !s.Auto)) {
		c := "all"
		if s.AllTo.IsValid() {
			c += ":" + s.AllTo.String()
		}
		chunks = append(chunks, c)
	}
	if s.Auto {
		chunks = append(chunks, "auto")
	}
	for _, r := range s.Include {
		c := r.Listen.String()
		switch {
		case r.ToAddr.IsValid() && r.Target == r.Listen:
			c += ":" + r.ToAddr.String()
		case r.ToAddr.IsValid():
			c += ":" + r.ToAddr.String() + "/" + r.Target.String()
		case r.Target != r.Listen:
			c += ":" + r.Target.String()
		}
		chunks = append(chunks, c)
	}
	for _, r := range s.Exclude {
		chunks = append(chunks, "~"+r.String())
	}
	rest := strings.Join(chunks, ",")
	if b.Len() == 0 && strings.Contains(rest, "/") {
		// A target address before a '/' (22:4:1::/23) would read as the listening
		// address: an empty one first ("/22:4:1::/23") says there is none.
		b.WriteByte('/')
	}
	b.WriteString(rest)
	return b.String()
}

// Forward is one host port forwarded to one namespace port.
type Forward struct {
	Listen, Target uint16     // the host's port and the namespace's
	ToAddr         netip.Addr // zero: the namespace's address
}

// Ephemeral is Linux's default ephemeral port range (net.ipv4.ip_local_port_range),
// which "all" leaves out.
var Ephemeral = Range{32768, 60999}

// Forwards expands s into single-port forwards, in ascending order of host port:
// included ports not excluded, and with All every port outside ephemeral not excluded
// (targets the same port). A host port included twice keeps its first rule; None gives
// none. With Auto the result is the set of candidates: the caller forwards only those
// the namespace listens on.
func (s Spec) Forwards(ephemeral Range) []Forward {
	if s.None {
		return nil
	}
	var excl [65536 / 64]uint64
	set := func(p uint16) { excl[p/64] |= 1 << (p % 64) }
	isSet := func(p uint16) bool { return excl[p/64]&(1<<(p%64)) != 0 }
	for _, r := range s.Exclude {
		for p := int(r.First); p <= int(r.Last); p++ {
			set(uint16(p))
		}
	}
	var byPort [65536]int32 // index+1 into out, 0: none
	var out []Forward
	add := func(l, t uint16, a netip.Addr) {
		if l == 0 || isSet(l) || byPort[l] != 0 {
			return
		}
		out = append(out, Forward{l, t, a})
		byPort[l] = int32(len(out))
	}
	for _, r := range s.Include {
		for i := 0; i < r.Listen.Len(); i++ {
			add(r.Listen.First+uint16(i), r.Target.First+uint16(i), r.ToAddr)
		}
	}
	if s.All {
		for p := 1; p < 65536; p++ {
			if !ephemeral.Contains(uint16(p)) {
				add(uint16(p), uint16(p), s.AllTo)
			}
		}
	}
	sorted := make([]Forward, 0, len(out))
	for p := 1; p < 65536; p++ {
		if i := byPort[p]; i != 0 {
			sorted = append(sorted, out[i-1])
		}
	}
	return sorted
}
