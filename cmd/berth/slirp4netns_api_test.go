package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berthnet/berth/forward"
)

// fakePorts records AddPort and RemovePort, refusing duplicates as a Forwarder does.
type fakePorts struct {
	mu sync.Mutex
	m  map[string]forward.PortMapping
}

func (f *fakePorts) AddPort(m forward.PortMapping) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m == nil {
		f.m = map[string]forward.PortMapping{}
	}
	if _, ok := f.m[m.String()]; ok {
		return fmt.Errorf("forward: %s: already forwarded", m)
	}
	f.m[m.String()] = m
	return nil
}

func (f *fakePorts) RemovePort(m forward.PortMapping) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.m[m.String()]; !ok {
		return fmt.Errorf("forward: %s: not forwarded", m)
	}
	delete(f.m, m.String())
	return nil
}

func newTestAPI(ipv6 bool) (*slirpAPI, *fakePorts) {
	fp := &fakePorts{}
	return &slirpAPI{ports: fp, ns4: netip.MustParseAddr("10.0.2.100"), ns6: netip.MustParseAddr("fd00::100"), ipv6: ipv6}, fp
}

func TestSlirpAPI(t *testing.T) {
	a, fp := newTestAPI(true)
	steps := []struct{ req, want string }{
		{`{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_addr": "0.0.0.0", "host_port": 8080, "guest_addr": "10.0.2.100", "guest_port": 80}}`,
			`{"return":{"id":1}}`},
		{`{"execute": "add_hostfwd", "arguments": {"proto": "udp", "host_port": 5353, "guest_port": 53}}`, `{"return":{"id":2}}`},
		{`{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_addr": "::1", "host_port": 8080, "guest_port": 80}}`, `{"return":{"id":3}}`},
		{`{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_addr": "0.0.0.0", "host_port": 8080, "guest_port": 80}}`,
			`{"error":{"desc":"bad request: add_hostfwd: forward: 0.0.0.0:8080:80/tcp: already forwarded"}}`},
		{`{"execute": "list_hostfwd"}`, `{"return":{"entries":[` +
			`{"id":1,"proto":"tcp","host_addr":"0.0.0.0","host_port":8080,"guest_addr":"10.0.2.100","guest_port":80},` +
			`{"id":2,"proto":"udp","host_addr":"0.0.0.0","host_port":5353,"guest_addr":"10.0.2.100","guest_port":53},` +
			`{"id":3,"proto":"tcp","host_addr":"::1","host_port":8080,"guest_addr":"fd00::100","guest_port":80}]}}`},
		{`{"execute": "remove_hostfwd", "arguments": {"id": 2}}`, `{"return":{}}`},
		{`{"execute": "remove_hostfwd", "arguments": {"id": 2}}`, `{"error":{"desc":"bad request: remove_hostfwd: bad arguments.id (no forward 2)"}}`},
		{`{"execute": "list_hostfwd"}`, `{"return":{"entries":[` +
			`{"id":1,"proto":"tcp","host_addr":"0.0.0.0","host_port":8080,"guest_addr":"10.0.2.100","guest_port":80},` +
			`{"id":3,"proto":"tcp","host_addr":"::1","host_port":8080,"guest_addr":"fd00::100","guest_port":80}]}}`},
	}
	for _, s := range steps {
		if got := string(a.handle([]byte(s.req))); got != s.want {
			t.Errorf("%s\n got %s\nwant %s", s.req, got, s.want)
		}
	}
	if len(fp.m) != 2 {
		t.Errorf("forwards in the table: %v", fp.m)
	}
	// Ids are never reused.
	if got := string(a.handle([]byte(`{"execute":"add_hostfwd","arguments":{"proto":"udp","host_port":5353,"guest_port":53}}`))); got != `{"return":{"id":4}}` {
		t.Errorf("re-add: %s", got)
	}
}

func TestSlirpAPIErrors(t *testing.T) {
	a, fp := newTestAPI(false)
	for _, req := range []string{
		``, `{`, `[]`, `"x"`, `{} {}`, `{"arguments": {}}`, `{"execute": 1}`, `{"execute": "reboot"}`,
		`{"execute": "add_hostfwd"}`,
		`{"execute": "add_hostfwd", "arguments": {"proto": "sctp", "host_port": 1, "guest_port": 1}}`,
		`{"execute": "add_hostfwd", "arguments": {"host_port": 1, "guest_port": 1}}`,
		`{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_port": 0, "guest_port": 1}}`,
		`{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_port": 65536, "guest_port": 1}}`,
		`{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_port": 1.5, "guest_port": 1}}`,
		`{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_port": "80", "guest_port": 1}}`,
		`{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_port": 80}}`,
		`{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_addr": "localhost", "host_port": 80, "guest_port": 80}}`,
		`{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_port": 80, "guest_addr": "10.0.2.5", "guest_port": 80}}`,
		`{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_addr": "::", "host_port": 80, "guest_port": 80}}`, // IPv6 off
		`{"execute": "remove_hostfwd"}`, `{"execute": "remove_hostfwd", "arguments": {"id": "1"}}`,
	} {
		got := a.handle([]byte(req))
		var r struct {
			Return json.RawMessage
			Error  *apiError
		}
		if err := json.Unmarshal(got, &r); err != nil || r.Error == nil || r.Return != nil || !strings.HasPrefix(r.Error.Desc, "bad request: ") {
			t.Errorf("%s: %s", req, got)
		}
	}
	if len(fp.m) != 0 {
		t.Errorf("bad requests changed the table: %v", fp.m)
	}
}

// TestSlirpAPISocket: one request per connection, ended by the client's shutdown; a
// request of 4096 bytes or more is refused; a client that never shuts down is dropped
// without stopping the others; the socket file goes with the listener.
func TestSlirpAPISocket(t *testing.T) {
	a, _ := newTestAPI(true)
	path := filepath.Join(t.TempDir(), "api.sock")
	ln, err := listenAPI(path)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { a.serve(ln); close(done) }()
	call := func(req string) string {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, req)
		c.(*net.UnixConn).CloseWrite()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		b, err := io.ReadAll(c)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	idle, err := net.Dial("unix", path) // never shuts down
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	if got := call(`{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_port":8080,"guest_port":80}}`); got != `{"return":{"id":1}}` {
		t.Errorf("add: %s", got)
	}
	if got := call(`{"execute":"list_hostfwd"}`); !strings.Contains(got, `"host_port":8080`) {
		t.Errorf("list: %s", got)
	}
	if got := call(`{"execute":"list_hostfwd","pad":"` + strings.Repeat("x", 5000) + `"}`); !strings.Contains(got, "too large") {
		t.Errorf("large request: %s", got)
	}
	ln.Close()
	<-done
	if _, err := net.Dial("unix", path); err == nil {
		t.Errorf("the socket still answers after Close")
	}
}

// FuzzSlirpAPI: whatever arrives on the API socket gets one JSON reply, "return" or
// "error", and never a panic.
func FuzzSlirpAPI(f *testing.F) {
	for _, s := range []string{
		`{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_addr": "0.0.0.0", "host_port": 8080, "guest_addr": "10.0.2.100", "guest_port": 80}}`,
		`{"execute": "list_hostfwd"}`, `{"execute": "remove_hostfwd", "arguments": {"id": 1}}`,
		`{"execute": "add_hostfwd", "arguments": {"proto": "udp", "host_addr": "::", "host_port": 53, "guest_port": 53}}`,
		`{}`, `null`, `{"execute": null}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, req string) {
		a, _ := newTestAPI(true)
		// A table that holds one forward first, so that removals can succeed.
		a.handle([]byte(`{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_port":1,"guest_port":1}}`))
		got := a.handle([]byte(req))
		var r map[string]json.RawMessage
		if err := json.Unmarshal(got, &r); err != nil || len(r) != 1 {
			t.Fatalf("%q: reply %s", req, got)
		}
		if _, ok := r["return"]; !ok {
			if _, ok := r["error"]; !ok {
				t.Fatalf("%q: reply %s", req, got)
			}
		}
	})
}
