package channel_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/netip"

	"github.com/berthnet/berth"
	"github.com/berthnet/berth/link/channel"
)

// A custom link: the application carries the packets between two stacks itself (here
// straight across; a VPN would encrypt and send them), with ReadPackets on one side and
// InjectPackets on the other.
func Example() {
	newHost := func(addr string) (*berth.Stack, *channel.Endpoint) {
		ep := channel.New(channel.Config{MTU: 1420})
		s := berth.New()
		if err := s.AddInterface("wg0", ep); err != nil { // attach first ...
			log.Fatal(err)
		}
		if err := s.AddAddress("wg0", netip.MustParsePrefix(addr)); err != nil { // ... then the address
			log.Fatal(err)
		}
		return s, ep
	}
	a, ea := newHost("10.8.0.1/24")
	b, eb := newHost("10.8.0.2/24")
	defer a.Close()
	defer b.Close()

	ctx, stop := context.WithCancel(context.Background())
	carry := func(from, to *channel.Endpoint) {
		bufs, sizes := [][]byte{make([]byte, from.MTU())}, make([]int, 1)
		for {
			n, err := from.ReadPackets(ctx, bufs, sizes)
			if err != nil {
				return // ctx ended or the stack closed the endpoint
			}
			for i := range n {
				to.InjectPackets([][]byte{bufs[i][:sizes[i]]})
			}
		}
	}
	go carry(ea, eb)
	go carry(eb, ea)
	defer stop()

	l, err := a.Listen(ctx, "tcp", "10.8.0.1:8080")
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	go func() {
		if c, err := l.Accept(); err == nil {
			fmt.Fprint(c, "carried by the application")
			c.Close()
		}
	}()
	c, err := b.DialContext(ctx, "tcp", "10.8.0.1:8080")
	if err != nil {
		log.Fatal(err)
	}
	msg, _ := io.ReadAll(c)
	c.Close()
	fmt.Println(string(msg))
	// Output: carried by the application
}
