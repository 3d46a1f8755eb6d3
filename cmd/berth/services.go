package main

import (
	"fmt"
	"strings"

	"github.com/berthnet/berth/ports"
)

// servicesUsage is the synopsis of berth services (after "berth "); main.go's table lists the
// command.
const servicesUsage = "services [NAME|PORT[/PROTO]]..."

// servicesDoc is the text of berth help services.
const servicesDoc = `Prints records of the IANA service name and port number registry in the layout
of "getent services": the name padded to 21 columns, port/protocol, then IANA's
description after a '#' (a comment, as in /etc/services, so tools that read
that file read this). PROTO is tcp, udp, sctp or dccp. Names are
case-insensitive. Port ranges show as low-high (x11 6000-6063/tcp); names
registered without a port show "-".

With no argument, lists every record that has a name, a port and a protocol,
in the registry's order, as "getent services" lists the whole database (the
few historical names with spaces are left out of the listing, so that every
line splits into the same columns).

Exit status, as getent's: 0 when every key matched, 2 when one did not (the
records of the keys that matched are printed all the same) or on a usage error.

Examples:
  berth services
  berth services https
  berth services 22/tcp domain/udp`

var protocols = map[string]bool{"tcp": true, "udp": true, "sctp": true, "dccp": true}

func runServices(c *command, args []string) int {
	if len(args) == 0 {
		for _, s := range ports.Services() {
			// A few historical names hold spaces ("Escale (Newton Dock)"): RFC 6335
			// §5.1 names cannot, and in the listing they would break the columns that
			// scripts split on white space.
			if s.Name != "" && s.HasPort && s.Protocol != "" && !strings.ContainsAny(s.Name, " \t") {
				fmt.Fprintln(stdout, formatService(s))
			}
		}
		return exitOK
	}
	code := exitOK
	for _, arg := range args {
		found, msg, usage := lookupServices(arg)
		if usage {
			return usageError(c, "%s", msg)
		}
		if msg != "" {
			fmt.Fprintf(stderr, "berth %s: %s\n", c.name, msg)
			code = exitUsage // getent's 2: a key was not found
			continue
		}
		for _, s := range found {
			fmt.Fprintln(stdout, formatService(s))
		}
	}
	return code
}

// lookupServices finds the records for one key, NAME or PORT with an optional /PROTO;
// msg says why there are none, and usage is set when the key is malformed rather than
// absent.
func lookupServices(arg string) (found []ports.Service, msg string, usage bool) {
	if arg == "" {
		return nil, "want a NAME or PORT, not an empty argument", true
	}
	key, proto, hasProto := strings.Cut(arg, "/")
	if hasProto {
		proto = strings.ToLower(proto)
		if !protocols[proto] {
			return nil, fmt.Sprintf("unknown protocol %q (want tcp, udp, sctp or dccp)", proto), true
		}
	}
	if key != "" && key[0] >= '0' && key[0] <= '9' || strings.HasPrefix(key, "-") {
		p, err := ports.ParsePort(key)
		if err != nil {
			return nil, err.Error(), false
		}
		if found = ports.LookupPort(p, proto); len(found) == 0 {
			return nil, "no service registered for port " + arg, false
		}
		return found, "", false
	}
	if key == "" {
		return nil, ports.ErrEmptyPort.Error(), true
	}
	if found = ports.LookupService(key, proto); len(found) == 0 {
		if hasProto && len(ports.LookupService(key, "")) > 0 {
			return nil, fmt.Sprintf("service %q is not registered for %s", key, proto), false
		}
		return nil, fmt.Sprintf("unknown service %q", key), false
	}
	return found, "", false
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
