package main

// The API socket of slirp4netns (its man page, "API SOCKET"): a UNIX stream socket
// where each connection carries one JSON request, ended by the client's shutdown(2)
// with SHUT_WR, and gets one JSON reply before berth closes it:
//
//	{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_addr": "0.0.0.0",
//	    "host_port": 8080, "guest_addr": "10.0.2.100", "guest_port": 80}}
//	                                   → {"return": {"id": 1}}
//	{"execute": "list_hostfwd"}        → {"return": {"entries": [{"id": 1, ...}]}}
//	{"execute": "remove_hostfwd", "arguments": {"id": 1}}
//	                                   → {"return": {}}
//
// and {"error": {"desc": "..."}} when a request fails. rootlesskit's slirp4netns port
// driver and Podman's slirp4netns port handler speak it. berth takes IPv6 host and
// guest addresses as well (slirp4netns takes IPv4 only), and forwards keep the
// client's address as the source the namespace sees.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/berthnet/berth/forward"
)

// apiMaxRequest is the largest request: slirp4netns reads one 4096-byte buffer.
const apiMaxRequest = 4096

// apiTimeout bounds how long a client may take to send its request: slirp4netns has
// none and a stuck client stops it; berth serves each connection on its own, and
// drops one that idles.
const apiTimeout = 10 * time.Second

// portTable is what the API changes: a Forwarder's host port forwards.
type portTable interface {
	AddPort(forward.PortMapping) error
	RemovePort(forward.PortMapping) error
}

// slirpAPI serves the API socket for one forwarder.
type slirpAPI struct {
	ports    portTable
	ns4, ns6 netip.Addr // the namespace's addresses: the only guests berth forwards to
	ipv6     bool       // IPv6 forwards allowed

	mu   sync.Mutex
	next int
	fwds []hostFwd // in the order added, ids ascending
}

// hostFwd is one forward as the API lists it.
type hostFwd struct {
	ID        int    `json:"id"`
	Proto     string `json:"proto"`
	HostAddr  string `json:"host_addr"`
	HostPort  int    `json:"host_port"`
	GuestAddr string `json:"guest_addr"`
	GuestPort int    `json:"guest_port"`

	m forward.PortMapping
}

// apiRequest is a request; the arguments are read per command.
type apiRequest struct {
	Execute   *string         `json:"execute"`
	Arguments json.RawMessage `json:"arguments"`
}

type apiError struct {
	Desc string `json:"desc"`
}

func apiFail(format string, a ...any) []byte {
	b, _ := json.Marshal(struct {
		Error apiError `json:"error"`
	}{apiError{"bad request: " + fmt.Sprintf(format, a...)}})
	return b
}

func apiReturn(v any) []byte {
	b, _ := json.Marshal(struct {
		Return any `json:"return"`
	}{v})
	return b
}

// handle answers one request.
func (a *slirpAPI) handle(req []byte) []byte {
	var r apiRequest
	d := json.NewDecoder(bytes.NewReader(req))
	if err := d.Decode(&r); err != nil {
		return apiFail("cannot parse JSON: %v", err)
	}
	if _, err := d.Token(); err != io.EOF {
		return apiFail("cannot parse JSON: data after the request")
	}
	if r.Execute == nil {
		return apiFail("no execute found")
	}
	switch *r.Execute {
	case "add_hostfwd":
		return a.add(r.Arguments)
	case "list_hostfwd":
		return a.list()
	case "remove_hostfwd":
		return a.remove(r.Arguments)
	}
	return apiFail("unknown execute %q", *r.Execute)
}

// apiPort reads a port number argument: an integer 1-65535.
func apiPort(v *float64, name string) (uint16, error) {
	if v == nil || *v != float64(int(*v)) || *v < 1 || *v > 65535 {
		return 0, fmt.Errorf("bad arguments.%s", name)
	}
	return uint16(*v), nil
}

func (a *slirpAPI) add(raw json.RawMessage) []byte {
	var args struct {
		Proto     *string  `json:"proto"`
		HostAddr  string   `json:"host_addr"`
		HostPort  *float64 `json:"host_port"`
		GuestAddr string   `json:"guest_addr"`
		GuestPort *float64 `json:"guest_port"`
	}
	if len(raw) == 0 || json.Unmarshal(raw, &args) != nil {
		return apiFail("add_hostfwd: bad arguments")
	}
	if args.Proto == nil || (*args.Proto != "tcp" && *args.Proto != "udp") {
		return apiFail("add_hostfwd: bad arguments.proto (want tcp or udp)")
	}
	host := netip.IPv4Unspecified()
	if args.HostAddr != "" {
		h, err := netip.ParseAddr(args.HostAddr)
		if err != nil || h.Zone() != "" {
			return apiFail("add_hostfwd: bad arguments.host_addr")
		}
		host = h.Unmap()
	}
	hp, err := apiPort(args.HostPort, "host_port")
	if err != nil {
		return apiFail("add_hostfwd: %v", err)
	}
	gp, err := apiPort(args.GuestPort, "guest_port")
	if err != nil {
		return apiFail("add_hostfwd: %v", err)
	}
	guest := a.ns4
	if host.Is6() {
		guest = a.ns6
	}
	if args.GuestAddr != "" {
		g, err := netip.ParseAddr(args.GuestAddr)
		if err != nil {
			return apiFail("add_hostfwd: bad arguments.guest_addr")
		}
		guest = g.Unmap()
	}
	if (host.Is6() || guest.Is6()) && !a.ipv6 {
		return apiFail("add_hostfwd: IPv6 forwards need --enable-ipv6")
	}
	// berth's forwards reach the namespace's own address of the client's family; a
	// host address of one family cannot reach a guest of the other.
	if guest != a.ns4 && guest != a.ns6 {
		return apiFail("add_hostfwd: arguments.guest_addr %s is not the namespace's address (%s)", guest, a.ns4)
	}
	// "::" listens for both families (IPV6_V6ONLY off), each reaching the guest of its
	// own; any other host address reaches only the guest of its family.
	if host.Is4() != guest.Is4() && host != netip.IPv6Unspecified() {
		return apiFail("add_hostfwd: arguments.host_addr %s and guest_addr %s are of different families", host, guest)
	}
	m := forward.PortMapping{Proto: *args.Proto, HostAddr: host, HostPort: hp, NSPort: gp}
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.ports.AddPort(m); err != nil {
		return apiFail("add_hostfwd: %v", err)
	}
	a.next++
	a.fwds = append(a.fwds, hostFwd{ID: a.next, Proto: m.Proto, HostAddr: host.String(), HostPort: int(hp),
		GuestAddr: guest.String(), GuestPort: int(gp), m: m})
	return apiReturn(map[string]int{"id": a.next})
}

func (a *slirpAPI) list() []byte {
	a.mu.Lock()
	defer a.mu.Unlock()
	entries := slices.Clone(a.fwds)
	if entries == nil {
		entries = []hostFwd{}
	}
	return apiReturn(map[string][]hostFwd{"entries": entries})
}

func (a *slirpAPI) remove(raw json.RawMessage) []byte {
	var args struct {
		ID *float64 `json:"id"`
	}
	if len(raw) == 0 || json.Unmarshal(raw, &args) != nil || args.ID == nil {
		return apiFail("remove_hostfwd: bad arguments.id")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	i := slices.IndexFunc(a.fwds, func(f hostFwd) bool { return float64(f.ID) == *args.ID })
	if i < 0 {
		return apiFail("remove_hostfwd: bad arguments.id (no forward %v)", *args.ID)
	}
	if err := a.ports.RemovePort(a.fwds[i].m); err != nil {
		return apiFail("remove_hostfwd: %v", err)
	}
	a.fwds = slices.Delete(a.fwds, i, i+1)
	return apiReturn(struct{}{})
}

// listenAPI makes the API socket at path, replacing a stale one as slirp4netns does.
func listenAPI(path string) (*net.UnixListener, error) {
	if st, err := os.Lstat(path); err == nil && st.Mode()&os.ModeSocket != 0 {
		os.Remove(path)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	ln.SetUnlinkOnClose(true)
	return ln, nil
}

// serve answers connections on ln until it is closed, and then closes the
// connections still open before it returns.
func (a *slirpAPI) serve(ln *net.UnixListener) {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[*net.UnixConn]struct{}{}
	)
	defer func() {
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	}()
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond) // EMFILE and the like: do not spin
			continue
		}
		mu.Lock()
		conns[c] = struct{}{}
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.serveConn(c)
			mu.Lock()
			delete(conns, c)
			mu.Unlock()
		}()
	}
}

func (a *slirpAPI) serveConn(c *net.UnixConn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(apiTimeout))
	req, err := io.ReadAll(io.LimitReader(c, apiMaxRequest))
	if err != nil {
		return // the client went away or idled: nothing to answer
	}
	if len(req) == apiMaxRequest {
		c.Write(apiFail("too large message (%d bytes or more)", apiMaxRequest))
		c.CloseWrite()
		// Closing with the rest unread would reset the connection before the client
		// reads the reply: read on, within the deadline and a bound.
		io.Copy(io.Discard, io.LimitReader(c, 1<<20))
		return
	}
	c.Write(a.handle(req))
	c.CloseWrite()
}
