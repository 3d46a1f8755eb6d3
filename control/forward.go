package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// The forward control socket of `berth run` and `berth attach` speaks the same protocol
// (one line of JSON each way) with one op, "forward":
//
//	→ {"op":"forward","action":"add","mapping":"8080:80/tcp"}
//	← {"ok":true,"forwards":["8080:80/tcp"]}
//	→ {"op":"forward","action":"ls"}
//	→ {"op":"forward","action":"rm","mapping":"8080:80/tcp"}
//
// Every answer lists the forwards in place afterwards.

// PortForwarder is what the forward op changes: port mappings in the
// [HOSTIP:]HOSTPORT:NSPORT[/tcp|/udp] form.
type PortForwarder interface {
	AddPort(mapping string) error
	RemovePort(mapping string) error
	Ports() []string
}

// ForwardRequest is a forward op's request.
type ForwardRequest struct {
	Op      string `json:"op"`     // "forward"
	Action  string `json:"action"` // "add", "rm", "ls"
	Mapping string `json:"mapping,omitempty"`
}

// ForwardResponse is its answer.
type ForwardResponse struct {
	OK       bool     `json:"ok"`
	Error    string   `json:"error,omitempty"`
	Forwards []string `json:"forwards"`
}

// ForwardServer serves the forward op on a unix socket.
type ForwardServer struct {
	path string
	ln   *net.UnixListener
	pf   PortForwarder
	wg   sync.WaitGroup
	once sync.Once
}

// ListenForward creates the socket at path (mode 0660, its directory 0755; a stale file
// is replaced) and serves pf on it until Close.
func ListenForward(path string, pf PortForwarder) (*ForwardServer, error) {
	if len(path) > 107 {
		return nil, fmt.Errorf("control socket path %q is longer than 107 bytes: choose a shorter one", path)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	if err := removeStale(path); err != nil {
		return nil, err
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	ln.SetUnlinkOnClose(true)
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		return nil, err
	}
	s := &ForwardServer{path: path, ln: ln, pf: pf}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.AcceptUnix()
			if err != nil {
				return
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				s.handle(c)
			}()
		}
	}()
	return s, nil
}

// Path is the socket's path.
func (s *ForwardServer) Path() string { return s.path }

// Close stops the server and removes the socket file.
func (s *ForwardServer) Close() error {
	s.once.Do(func() {
		s.ln.Close()
		s.wg.Wait()
	})
	return nil
}

func (s *ForwardServer) handle(c *net.UnixConn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(requestTimeout))
	line, err := bufio.NewReaderSize(io.LimitReader(c, maxRequest), maxRequest).ReadBytes('\n')
	if err != nil && !(errors.Is(err, io.EOF) && len(line) > 0) {
		return
	}
	var req ForwardRequest
	resp := ForwardResponse{}
	var opErr error
	switch err := json.Unmarshal(line, &req); {
	case err != nil:
		resp.Error = "malformed request: " + err.Error()
	case req.Op != "forward":
		resp.Error = fmt.Sprintf("unknown op %q (this socket serves forward)", req.Op)
	case req.Action == "add":
		opErr = s.pf.AddPort(req.Mapping)
	case req.Action == "rm":
		opErr = s.pf.RemovePort(req.Mapping)
	case req.Action == "ls":
	default:
		resp.Error = fmt.Sprintf("unknown action %q (want add, rm or ls)", req.Action)
	}
	if opErr != nil {
		resp.Error = opErr.Error()
	}
	resp.OK = resp.Error == ""
	resp.Forwards = s.pf.Ports()
	b, _ := json.Marshal(resp)
	c.Write(append(b, '\n'))
}

// Forward sends a forward op (action "add", "rm" or "ls") and returns the forwards in
// place afterwards.
func (c *Client) Forward(ctx context.Context, action, mapping string) ([]string, error) {
	conn, err := c.dial(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	b, _ := json.Marshal(ForwardRequest{Op: "forward", Action: action, Mapping: mapping})
	if _, err := conn.Write(append(b, '\n')); err != nil {
		return nil, c.ioErr(ctx, err)
	}
	line, err := bufio.NewReader(conn).ReadBytes('\n')
	if err != nil {
		return nil, c.ioErr(ctx, err)
	}
	var resp ForwardResponse
	if err := json.Unmarshal(line, &resp); err != nil {
		return nil, fmt.Errorf("control socket %s: malformed answer: %v", c.Path, err)
	}
	if !resp.OK {
		return resp.Forwards, fmt.Errorf("berth at %s: %s", c.Path, resp.Error)
	}
	return resp.Forwards, nil
}
