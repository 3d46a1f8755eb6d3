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

// forwardUsage is the synopsis of berth forward (after "berth "); main.go's table lists the
// command.
const forwardUsage = "forward [--control PATH] add|rm MAPPING | ls"

// forwardDoc is the text of berth help forward.
var forwardDoc = `MAPPING is [HOSTIP:]HOSTPORT:NSPORT[/tcp|/udp], as run's -p.
--control names the control socket of a berth run or attach (default: the one
running, ` + filepath.Join(control.Dir(), "forward-PID.sock") + `).`

// forwardSocketPath is the default control socket of this process's berth run or attach:
// a .sock in control.Dir() like berth up's, so that berth ss, stats and capture find it;
// the forward- prefix lets berth forward find it among berth up's.
func forwardSocketPath() string {
	return filepath.Join(control.Dir(), "forward-"+strconv.Itoa(os.Getpid())+".sock")
}

// findForwardSocket finds the one control socket of a running berth run or attach.
func findForwardSocket() (string, error) {
	var found []string
	for _, d := range slices.Compact([]string{control.Dir(), control.RunDir}) {
		m, _ := filepath.Glob(filepath.Join(d, "forward-*.sock"))
		found = append(found, m...)
	}
	switch len(found) {
	case 0:
		return "", fmt.Errorf("%w: no berth run or attach with a control socket", control.ErrNotRunning)
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

// sessionTap returns the capture tap of a session whose control socket is controlPath
// ("none": no socket, no tap), and sets it to wrap the session's device, so that berth
// capture records the namespace's packets as it does berth up's.
func sessionTap(cfg *forward.SessionConfig, controlPath string) *control.Tap {
	if controlPath == "none" {
		return nil
	}
	tap := &control.Tap{}
	cfg.Link = tap.Wrap
	return tap
}

// sessionSource is what the control socket of berth run and attach serves: the session
// stack's sockets and counters, as berth up's, captures through the tap on its device,
// and the port forwards.
type sessionSource struct {
	control.Source
	tap *control.Tap
	portForwarder
}

// Capture implements control.Capturer.
func (s sessionSource) Capture(ctx context.Context, w io.Writer, count int) error {
	return s.tap.Capture(ctx, w, count)
}

// Counters are the stack's and the process's (control.FromStack), then the forwarder's
// (each "Forward…": its flows, limits and what they dropped).
func (s sessionSource) Counters() []control.Counter {
	cs := s.Source.Counters()
	for _, c := range s.f.Counters() {
		cs = append(cs, control.Counter{Name: c.Name, Value: c.Value})
	}
	return cs
}

// serveSessionControl serves sess on the control socket at path ("" the default path);
// tap is sessionTap's.
func serveSessionControl(path string, sess *forward.Session, tap *control.Tap) (stop func(), err error) {
	if path == "" {
		path = forwardSocketPath()
	}
	src := sessionSource{Source: control.FromStack(sess.Stack, nil), tap: tap, portForwarder: portForwarder{sess.Forwarder}}
	s, err := control.Listen(path, src, nil)
	if err != nil {
		return nil, err
	}
	return func() { s.Close() }, nil
}

func runForward(c *command, args []string) int {
	fs := flag.NewFlagSet("forward", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	path := fs.String("control", "", "forward socket path")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return runHelp([]string{c.name}) // as every command: usage and help on stdout, exit 0
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
		return usageError(c, "want add MAPPING, rm MAPPING or ls, not %q", rest)
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
