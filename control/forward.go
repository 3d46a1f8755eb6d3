package control

import (
	"context"
	"fmt"
	"net"
)

// The control socket of `berth run` and `berth attach` also serves the "forward" op, which
// changes the session's port forwards; every answer lists the forwards in place afterwards:
//
//	→ {"op":"forward","action":"add","mapping":"8080:80/tcp"}
//	← {"ok":true,"forwards":["8080:80/tcp"]}
//	→ {"op":"forward","action":"ls"}
//	→ {"op":"forward","action":"rm","mapping":"8080:80/tcp"}

// PortForwarder is a Source that also has port forwards, which the forward op changes:
// mappings in the [HOSTIP:]HOSTPORT:NSPORT[/tcp|/udp] form.
type PortForwarder interface {
	AddPort(mapping string) error    // adds a port mapping (as berth run -p writes it); errors say why not
	RemovePort(mapping string) error // removes a mapping AddPort added
	Ports() []string                 // lists the mappings in force
}

// forward serves the forward op.
func (s *Server) forward(c *net.UnixConn, req Request) {
	pf, ok := s.src.(PortForwarder)
	if !ok {
		s.reply(c, Response{Error: "this berth has no port forwards (berth run and berth attach have)"})
		return
	}
	var err error
	switch req.Action {
	case "add":
		err = pf.AddPort(req.Mapping)
	case "rm":
		err = pf.RemovePort(req.Mapping)
	case "ls":
	default:
		err = fmt.Errorf("unknown action %q (want add, rm or ls)", req.Action)
	}
	resp := Response{OK: err == nil, Forwards: pf.Ports()}
	if err != nil {
		resp.Error = err.Error()
	}
	s.reply(c, resp)
}

// Forward sends a forward op (action "add", "rm" or "ls"; mapping for add and rm) and
// returns the forwards in place afterwards.
func (c *Client) Forward(ctx context.Context, action, mapping string) ([]string, error) {
	resp, conn, _, err := c.do(ctx, Request{Op: "forward", Action: action, Mapping: mapping})
	if err != nil {
		return nil, err
	}
	conn.Close()
	return resp.Forwards, nil
}
