package tun_test

import (
	"context"
	"log"
	"net/http"
	"net/netip"

	"github.com/berthnet/berth"
	"github.com/berthnet/berth/link/tun"
)

// A berth stack on a TUN device, with the kernel on the other side. It needs
// CAP_NET_ADMIN, so it is compiled but not run by go test. The kernel's side is set up
// once the device exists:
//
//	ip link set berth0 up
//	ip addr add 10.9.0.1/24 dev berth0
//	curl http://10.9.0.2/
func Example() {
	ep, err := tun.Open("berth0", tun.Options{VnetHdr: true}) // offloads when the kernel agrees
	if err != nil {
		log.Fatal(err)
	}
	s := berth.New()
	defer s.Close() // closes the device too
	if err := s.AddInterface("berth0", ep); err != nil {
		log.Fatal(err)
	}
	if err := s.AddAddress("berth0", netip.MustParsePrefix("10.9.0.2/24")); err != nil {
		log.Fatal(err)
	}
	l, err := s.Listen(context.Background(), "tcp", ":http")
	if err != nil {
		log.Fatal(err)
	}
	log.Fatal(http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("served by berth\n"))
	})))
}
