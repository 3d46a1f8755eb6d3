package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/berthnet/berth/control"
	"github.com/berthnet/berth/forward"
)

func init() {
	register(&command{
		name:    "forward",
		summary: "add, remove or list the port forwards of a running berth run or attach",
		usage:   "forward [--control PATH] add|rm MAPPING | ls",
		help: `MAPPING is [HOSTIP:]HOSTPORT:NSPORT[/tcp|/udp], as run's -p.
--control names the forward socket of a berth run or attach (default: the one
running, ` + filepath.Join(control.Dir(), "forward-PID.fwd") + `).`,
		run: runForward,
	})
}

// forwardSocketPath is the default forward control socket of this process.
func forwardSocketPath() string {
	return filepath.Join(control.Dir(), "forward-"+strconv.Itoa(os.Getpid())+".fwd")
}

// findForwardSocket finds the one forward socket of a running berth run or attach.
func findForwardSocket() (string, error) {
	var found []string
	for _, d := range slices.Compact([]string{control.Dir(), control.RunDir}) {
		m, _ := filepath.Glob(filepath.Join(d, "forward-*.fwd"))
		found = append(found, m...)
	}
	switch len(found) {
	case 0:
		return "", fmt.Errorf("%w: no berth run or attach with a forward socket", control.ErrNotRunning)
	case 1:
		return found[0], nil
	}
	return "", fmt.Errorf("several berth run or attach are running (%s): choose one with --control PATH", strings.Join(found, ", "))
}

// portForwarder adapts a Forwarder to the control socket's string mappings.
type portForwarder struct{ f *forward.Forwarder }

func (p portForwarder) AddPort(s string) error {
	m, err := forward.ParsePortMapping(s)
	if err != nil {
		return err
	}
	return p.f.AddPort(m)
}

func (p portForwarder) RemovePort(s string) error {
	m, err := forward.ParsePortMapping(s)
	if err != nil {
		return err
	}
	return p.f.RemovePort(m)
}

func (p portForwarder) Ports() []string {
	var out []string
	for _, m := range p.f.Ports() {
		out = append(out, m.String())
	}
	slices.Sort(out)
	return out
}

// serveForwardControl serves sess's port forwards on path ("" the default path).
func serveForwardControl(path string, sess *forward.Session) (stop func(), err error) {
	if path == "" {
		path = forwardSocketPath()
	}
	s, err := control.ListenForward(path, portForwarder{sess.Forwarder})
	if err != nil {
		return nil, err
	}
	return func() { s.Close() }, nil
}

func runForward(args []string) int {
	c := commands["forward"]
	fs := flag.NewFlagSet("forward", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	path := fs.String("control", "", "forward socket path")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(stdout, "usage: berth %s\n\n%s\n", c.usage, c.help)
			return exitOK
		}
		return usageError(c, "%v", err)
	}
	rest := fs.Args()
	if len(rest) == 0 {
		return usageError(c, "no action given")
	}
	action, mapping := rest[0], ""
	switch {
	case (action == "add" || action == "rm") && len(rest) == 2:
		mapping = rest[1]
		if _, err := forward.ParsePortMapping(mapping); err != nil {
			return usageError(c, "%v", err)
		}
	case action == "ls" && len(rest) == 1:
	default:
		return usageError(c, "")
	}
	if *path == "" {
		p, err := findForwardSocket()
		if err != nil {
			return fail("forward", "%v", err)
		}
		*path = p
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	fwds, err := (&control.Client{Path: *path}).Forward(ctx, action, mapping)
	if err != nil {
		return fail("forward", "%v", err)
	}
	if action == "ls" {
		for _, f := range fwds {
			fmt.Fprintln(stdout, f)
		}
	}
	return exitOK
}
