package netstack_test

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"

	"github.com/berthnet/berth/wireguard/netstack"
	"golang.org/x/crypto/curve25519"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
)

// Two programs' worth of WireGuard in one: a server and a client, each a berth stack
// behind a wireguard-go device, peered over loopback UDP. The client fetches a page from
// the server through the encrypted tunnel; neither needs root or a TUN device.
func ExampleCreateNetTUN() {
	serverAddr := netip.MustParseAddr("192.168.4.1")
	clientAddr := netip.MustParseAddr("192.168.4.2")

	serverTun, serverNet, err := netstack.CreateNetTUN([]netip.Addr{serverAddr}, nil, 1420)
	if err != nil {
		panic(err)
	}
	clientTun, clientNet, err := netstack.CreateNetTUN([]netip.Addr{clientAddr}, nil, 1420)
	if err != nil {
		panic(err)
	}
	logger := device.NewLogger(device.LogLevelError, "")
	server := device.NewDevice(serverTun, conn.NewDefaultBind(), logger)
	defer server.Close()
	client := device.NewDevice(clientTun, conn.NewDefaultBind(), logger)
	defer client.Close()

	serverPriv, serverPub := keys()
	clientPriv, clientPub := keys()
	// The server listens on a free UDP port (listen_port=0); the client is told which.
	server.IpcSet("private_key=" + serverPriv + "\nlisten_port=0\n" +
		"public_key=" + clientPub + "\nallowed_ip=" + clientAddr.String() + "/32\n")
	server.Up()
	cfg, _ := server.IpcGet()
	port := cfg[strings.Index(cfg, "listen_port=")+len("listen_port="):]
	port = port[:strings.IndexByte(port, '\n')]
	client.IpcSet("private_key=" + clientPriv + "\n" +
		"public_key=" + serverPub + "\nendpoint=127.0.0.1:" + port + "\nallowed_ip=0.0.0.0/0\n")
	client.Up()

	ln, err := serverNet.ListenTCPAddrPort(netip.AddrPortFrom(serverAddr, 80))
	if err != nil {
		panic(err)
	}
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello through WireGuard from "+r.Host)
	}))
	defer ln.Close()

	httpClient := http.Client{Transport: &http.Transport{DialContext: clientNet.DialContext}}
	resp, err := httpClient.Get("http://192.168.4.1/")
	if err != nil {
		panic(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Println(resp.Status)
	fmt.Println(strings.TrimSpace(string(body)))
	// Output:
	// 200 OK
	// hello through WireGuard from 192.168.4.1
}

// keys returns a new Curve25519 key pair in the hex form wireguard-go's IpcSet takes.
func keys() (private, public string) {
	var priv [32]byte
	rand.Read(priv[:])
	priv[0] &= 248 // RFC 7748 §5
	priv[31] = priv[31]&127 | 64
	pub, _ := curve25519.X25519(priv[:], curve25519.Basepoint)
	return hex.EncodeToString(priv[:]), hex.EncodeToString(pub)
}
