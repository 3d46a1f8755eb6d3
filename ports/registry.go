package ports

import (
	_ "embed"
	"strconv"
	"strings"
	"sync"
)

// registryData is IANA's service registry in the compact form written by
// internal/iana/gen (see there for the format).
//
//go:embed registry_data.txt
var registryData string

// Service is one record of the IANA service name and port number registry.
type Service struct {
	Name        string // service name; "" for reserved/unassigned port records
	Port        Port   // the port, or the low end of a range
	PortHigh    Port   // the high end of a range (== Port for a single port)
	Protocol    string // "tcp", "udp", "sctp", "dccp", or "" (a name registered without a port)
	Description string // the registry's description of the service, as IANA writes it
	HasPort     bool   // false for a service name registered without a port
}

// String formats s like a line of /etc/services: "https 443/tcp".
func (s Service) String() string {
	var b strings.Builder
	b.WriteString(s.Name)
	b.WriteByte(' ')
	b.WriteString(s.PortString())
	if s.Protocol != "" {
		b.WriteByte('/')
		b.WriteString(s.Protocol)
	}
	return b.String()
}

// PortString returns "443", "6000-6063", or "-" for a name without a port.
func (s Service) PortString() string {
	switch {
	case !s.HasPort:
		return "-"
	case s.PortHigh != s.Port:
		return s.Port.String() + "-" + s.PortHigh.String()
	}
	return s.Port.String()
}

type registry struct {
	all    []Service
	byName map[string][]int32 // lower-case name → records, in registry order
	byPort map[Port][]int32   // single named ports → records
	ranges []int32            // named port ranges, scanned by LookupPort
}

var (
	regOnce sync.Once
	reg     *registry
)

// theRegistry parses the embedded data on first use.
func theRegistry() *registry {
	regOnce.Do(func() { reg = parseRegistry(registryData) })
	return reg
}

func parseRegistry(data string) *registry {
	r := &registry{
		all:    make([]Service, 0, 14500),
		byName: make(map[string][]int32, 6500),
		byPort: make(map[Port][]int32, 6500),
	}
	var prev Service
	for len(data) > 0 {
		line, rest, _ := strings.Cut(data, "\n")
		data = rest
		if line == "" || line[0] == '#' {
			continue
		}
		var s Service
		if line[0] == '+' {
			s = prev
			s.Protocol = line[1:]
		} else {
			f := strings.SplitN(line, "\t", 4)
			if len(f) != 4 {
				continue // the up-to-date test guarantees this does not happen
			}
			s.Name, s.Protocol, s.Description = f[0], f[2], unescape(f[3])
			if f[1] != "" {
				lo, hi, isRange := strings.Cut(f[1], "-")
				l, err1 := strconv.ParseUint(lo, 10, 16)
				h := l
				var err2 error
				if isRange {
					h, err2 = strconv.ParseUint(hi, 10, 16)
				}
				if err1 != nil || err2 != nil || h < l {
					continue
				}
				s.Port, s.PortHigh, s.HasPort = Port(l), Port(h), true
			}
		}
		prev = s
		i := int32(len(r.all))
		r.all = append(r.all, s)
		if s.Name == "" {
			continue
		}
		k := strings.ToLower(s.Name)
		r.byName[k] = append(r.byName[k], i)
		switch {
		case !s.HasPort:
		case s.Port == s.PortHigh:
			r.byPort[s.Port] = append(r.byPort[s.Port], i)
		default:
			r.ranges = append(r.ranges, i)
		}
	}
	return r
}

func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			i++
			switch s[i] {
			case 'n':
				b.WriteByte('\n')
			case 't':
				b.WriteByte('\t')
			default:
				b.WriteByte(s[i])
			}
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Services returns every record of the registry (14,447 in the embedded snapshot),
// including reserved and unassigned port records (empty Name). The slice is a copy.
func Services() []Service {
	return append([]Service(nil), theRegistry().all...)
}

// LookupService returns the records registered under name (case-insensitive, RFC 6335
// §5.1), for protocol proto ("tcp", "udp", "sctp", "dccp"; "" for all), in registry order.
// Names registered without a port are included with HasPort false.
func LookupService(name, proto string) []Service {
	r := theRegistry()
	var out []Service
	for _, i := range r.named(name) {
		if s := r.all[i]; proto == "" || s.Protocol == proto {
			out = append(out, s)
		}
	}
	return out
}

// LookupPort returns the named records for port (single ports first, then ranges holding
// it, such as x11 6000-6063) for protocol proto ("" for all). Reserved and unassigned
// records are left out; Services has them.
func LookupPort(port Port, proto string) []Service {
	r := theRegistry()
	var out []Service
	for _, i := range r.byPort[port] {
		if s := r.all[i]; proto == "" || s.Protocol == proto {
			out = append(out, s)
		}
	}
	for _, i := range r.ranges {
		if s := r.all[i]; s.Port <= port && port <= s.PortHigh && (proto == "" || s.Protocol == proto) {
			out = append(out, s)
		}
	}
	return out
}

// ServiceName returns the first service name registered for port and proto ("" for any
// protocol), or "" if none: the name an ss-like view shows. It does not allocate.
func ServiceName(port Port, proto string) string {
	r := theRegistry()
	for _, i := range r.byPort[port] {
		if s := &r.all[i]; proto == "" || s.Protocol == proto {
			return s.Name
		}
	}
	for _, i := range r.ranges {
		if s := &r.all[i]; s.Port <= port && port <= s.PortHigh && (proto == "" || s.Protocol == proto) {
			return s.Name
		}
	}
	return ""
}

// named returns the indexes of the records named name, matched case-insensitively (RFC
// 6335 §5.1): the exact spelling first, so the usual lower-case name costs no ToLower.
func (r *registry) named(name string) []int32 {
	if idx, ok := r.byName[name]; ok {
		return idx
	}
	return r.byName[strings.ToLower(name)]
}

// servicePort returns the port of the first record named name that has a port (the low
// end of a range: x11 is 6000).
func servicePort(name string) (Port, bool) {
	r := theRegistry()
	for _, i := range r.named(name) {
		if s := &r.all[i]; s.HasPort {
			return s.Port, true
		}
	}
	return 0, false
}
