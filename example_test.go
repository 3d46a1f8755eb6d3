package berth_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"syscall"

	"github.com/berthnet/berth"
	"github.com/berthnet/berth/vnet"
)

// Two stacks in one process, joined by an in-memory cable: a TCP server on one, a client
// on the other, with the standard library's interfaces on both sides.
func Example() {
	a, b, err := vnet.Pair() // a: 10.0.0.1, fd00::1; b: 10.0.0.2, fd00::2
	if err != nil {
		log.Fatal(err)
	}
	defer a.Close()
	defer b.Close()
	ctx := context.Background()

	l, err := a.Listen(ctx, "tcp", ":7") // a net.Listener
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		io.Copy(c, c) // echo
		c.Close()
	}()

	c, err := b.DialContext(ctx, "tcp", "10.0.0.1:echo") // a net.Conn; named ports work
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	fmt.Fprint(c, "hello, berth")
	c.(*berth.TCPConn).CloseWrite()
	reply, _ := io.ReadAll(c)
	fmt.Printf("%s from %v\n", reply, c.RemoteAddr())
	// Output: hello, berth from 10.0.0.1:7
}

// net/http runs unchanged on a berth stack: the server gets a berth net.Listener, the
// client a Transport whose DialContext is the other stack's. Host names come from the
// stack's static entries here; WithDNS adds DNS servers queried over berth's own UDP.
func Example_http() {
	hosts := berth.WithHosts(map[string][]netip.Addr{"server.test": {netip.MustParseAddr("10.0.0.1")}})
	a, b, err := vnet.Pair(vnet.WithStackOptions(hosts))
	if err != nil {
		log.Fatal(err)
	}
	defer a.Close()
	defer b.Close()

	l, err := a.Listen(context.Background(), "tcp", ":http")
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		fmt.Fprintf(w, "hello %s, this is %s", host, r.Host)
	})}
	go srv.Serve(l)
	defer srv.Close()

	tr := &http.Transport{DialContext: b.DialContext}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get("http://server.test/")
	if err != nil {
		log.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Println(resp.Status, string(body))
	// Output: 200 OK hello 10.0.0.2, this is server.test
}

// UDP: a net.PacketConn on one stack, a connected UDP socket on the other, and an ICMP
// port unreachable turned into ECONNREFUSED as on Linux.
func Example_udp() {
	a, b, err := vnet.Pair()
	if err != nil {
		log.Fatal(err)
	}
	defer a.Close()
	defer b.Close()
	ctx := context.Background()

	pc, err := a.ListenPacket(ctx, "udp", ":5353")
	if err != nil {
		log.Fatal(err)
	}
	defer pc.Close()
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo([]byte(strings.ToUpper(string(buf[:n]))), from)
		}
	}()

	c, err := b.DialContext(ctx, "udp", "[fd00::1]:5353")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("ping"))
	buf := make([]byte, 1500)
	n, _ := c.Read(buf)
	fmt.Printf("%s from %v\n", buf[:n], c.RemoteAddr())

	closed, _ := b.DialContext(ctx, "udp", "10.0.0.1:9") // nothing listens there
	defer closed.Close()
	closed.Write([]byte("anyone?"))
	_, err = closed.Read(buf)
	fmt.Println(errors.Is(err, syscall.ECONNREFUSED))
	// Output:
	// PING from [fd00::1]:5353
	// true
}
