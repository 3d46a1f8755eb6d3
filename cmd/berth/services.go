package main

import (
	"fmt"
	"strings"

	"github.com/berthnet/berth/ports"
)

// servicesUsage is the synopsis of berth services (after "berth "); main.go's table lists the
// command.
const servicesUsage = "services NAME|PORT[/PROTO]"

// servicesDoc is the text of berth help services.
const servicesDoc = `Prints the matching records of the IANA service name and port number registry
in the style of "getent services": name, port/protocol, and the description
after a '#'. PROTO is tcp, udp, sctp or dccp. Names are case-insensitive.
Port ranges show as low-high (x11 6000-6063/tcp); names registered without a
port show "-". Exits 1 when nothing matches.

Examples:
  berth services https
  berth services 22/tcp`

var protocols = map[string]bool{"tcp": true, "udp": true, "sctp": true, "dccp": true}

func runServices(c *command, args []string) int {
	if len(args) != 1 || args[0] == "" {
		return usageError(c, "want one NAME or PORT")
	}
	key, proto, hasProto := strings.Cut(args[0], "/")
	if hasProto {
		proto = strings.ToLower(proto)
		if !protocols[proto] {
			return usageError(c, "unknown protocol %q (want tcp, udp, sctp or dccp)", proto)
		}
	}
	var found []ports.Service
	if key != "" && key[0] >= '0' && key[0] <= '9' || strings.HasPrefix(key, "-") {
		p, err := ports.ParsePort(key)
		if err != nil {
			return fail(c.name, "%v", err)
		}
		found = ports.LookupPort(p, proto)
		if len(found) == 0 {
			return fail(c.name, "no service registered for port %s", args[0])
		}
	} else {
		if key == "" {
			return usageError(c, "%v", ports.ErrEmptyPort)
		}
		found = ports.LookupService(key, proto)
		if len(found) == 0 {
			if hasProto && len(ports.LookupService(key, "")) > 0 {
				return fail(c.name, "service %q is not registered for %s", key, proto)
			}
			return fail(c.name, "unknown service %q", key)
		}
	}
	for _, s := range found {
		fmt.Fprintln(stdout, formatService(s))
	}
	return exitOK
}

// formatService is one line in getent's layout (the name padded to 21 columns, then
// port/protocol), with IANA's description as a trailing comment:
//
//	https                 443/tcp      # http protocol over TLS/SSL
func formatService(s ports.Service) string {
	pp := s.PortString()
	if s.Protocol != "" {
		pp += "/" + s.Protocol
	}
	line := fmt.Sprintf("%-21s %s", s.Name, pp)
	if d := strings.Join(strings.Fields(s.Description), " "); d != "" {
		line = fmt.Sprintf("%-34s # %s", line, d)
	}
	return line
}
