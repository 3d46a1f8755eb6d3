package main

import (
	"fmt"
	"sort"
	"strings"

	"github.com/berthnet/berth/ports"
)

// portUsage is the synopsis of berth port (after "berth "); main.go's table lists the
// command.
const portUsage = "port N|NAME"

// portDoc is the text of berth help port.
const portDoc = `Prints the port number, its category by RFC 6335 §6 — system (well-known)
0-1023, user (registered) 1024-49151, dynamic (ephemeral) 49152-65535 — and the
service names IANA registered for it.

Port 0 is reserved by IANA; to a socket API it means "any free port".

Example:
  berth port 443
  443 system (well-known) 0-1023: https (tcp, udp, sctp)`

func runPort(c *command, args []string) int {
	if len(args) != 1 {
		return usageError(c, "want one port")
	}
	p, err := ports.ParsePort(args[0])
	if err != nil {
		return fail(c.name, "%v", err)
	}
	cat := p.Category()
	r := cat.Range()
	line := fmt.Sprintf("%d %s %d-%d", p, cat, r.Low, r.High)
	if names := serviceSummary(p); names != "" {
		line += ": " + names
	} else if p == 0 {
		// The registry lists port 0 as Reserved for every protocol: no service may use
		// it, and a socket API treats 0 as "pick a free port for me" (berth's
		// Listen(":0") and bind's ephemeral choice, RFC 6056).
		line += ": reserved by IANA, never a service's port; in a bind or listen, 0 asks for a free ephemeral port"
	}
	fmt.Fprintln(stdout, line)
	return exitOK
}

// serviceSummary lists the names registered for p with their protocols:
// "https (tcp, udp, sctp)".
func serviceSummary(p ports.Port) string {
	var order []string
	protos := map[string][]string{}
	for _, s := range ports.LookupPort(p, "") {
		if _, ok := protos[s.Name]; !ok {
			order = append(order, s.Name)
		}
		protos[s.Name] = append(protos[s.Name], s.Protocol)
	}
	var parts []string
	for _, n := range order {
		ps := protos[n]
		sort.SliceStable(ps, func(i, j int) bool { return protoRank(ps[i]) < protoRank(ps[j]) })
		parts = append(parts, n+" ("+strings.Join(ps, ", ")+")")
	}
	return strings.Join(parts, ", ")
}

func protoRank(p string) int {
	switch p {
	case "tcp":
		return 0
	case "udp":
		return 1
	case "sctp":
		return 2
	}
	return 3
}
