package netstack

import (
	"net"
	"net/netip"
	"reflect"
	"testing"

	"golang.zx2c4.com/wireguard/tun"
	wgnetstack "golang.zx2c4.com/wireguard/tun/netstack"
)

// The package-level API has wireguard-go's signatures.
var (
	_ func(local, dns []netip.Addr, mtu int) (tun.Device, *Net, error)            = CreateNetTUN
	_ func(local, dns []netip.Addr, mtu int) (tun.Device, *wgnetstack.Net, error) = wgnetstack.CreateNetTUN
	_ func(netip.Addr) *PingAddr                                                  = PingAddrFromAddr
	_ func(netip.Addr) *wgnetstack.PingAddr                                       = wgnetstack.PingAddrFromAddr
)

// TestAPIMatchesWireguardGo guards "swap one import": every method of wireguard-go's
// netstack Net, PingConn and PingAddr exists here with the same name and arguments, and
// returns values that satisfy the same standard interfaces (net.Conn, net.PacketConn,
// net.Listener, net.Addr) — the concrete types are berth's instead of gVisor's gonet.
func TestAPIMatchesWireguardGo(t *testing.T) {
	ifaces := []reflect.Type{
		reflect.TypeFor[net.Conn](), reflect.TypeFor[net.PacketConn](),
		reflect.TypeFor[net.Listener](), reflect.TypeFor[net.Addr](),
	}
	for _, pair := range [][2]reflect.Type{
		{reflect.TypeFor[*wgnetstack.Net](), reflect.TypeFor[*Net]()},
		{reflect.TypeFor[*wgnetstack.PingConn](), reflect.TypeFor[*PingConn]()},
		{reflect.TypeFor[*wgnetstack.PingAddr](), reflect.TypeFor[*PingAddr]()},
	} {
		theirs, ours := pair[0], pair[1]
		for i := range theirs.NumMethod() {
			tm := theirs.Method(i)
			om, ok := ours.MethodByName(tm.Name)
			if !ok {
				t.Errorf("%v has no method %s", ours, tm.Name)
				continue
			}
			tf, of := tm.Type, om.Type
			if tf.NumIn() != of.NumIn() || tf.NumOut() != of.NumOut() || tf.IsVariadic() != of.IsVariadic() {
				t.Errorf("%s: %v here, %v in wireguard-go", tm.Name, of, tf)
				continue
			}
			for j := 1; j < tf.NumIn(); j++ { // 0 is the receiver
				if a, b := tf.In(j), of.In(j); a != b && !sameByName(a, b) {
					t.Errorf("%s: argument %d is %v here, %v in wireguard-go", tm.Name, j, b, a)
				}
			}
			for j := range tf.NumOut() {
				a, b := tf.Out(j), of.Out(j)
				if a == b || sameByName(a, b) {
					continue
				}
				for _, it := range ifaces {
					if a.Implements(it) && !b.Implements(it) {
						t.Errorf("%s: result %d (%v) is not a %v as wireguard-go's (%v) is", tm.Name, j, b, it, a)
					}
				}
			}
		}
	}
}

// sameByName reports whether a (from wireguard-go's package) and b (from this one) are
// the counterpart types, such as *wgnetstack.PingAddr and *PingAddr.
func sameByName(a, b reflect.Type) bool {
	for a.Kind() == reflect.Pointer && b.Kind() == reflect.Pointer {
		a, b = a.Elem(), b.Elem()
	}
	return a.Name() == b.Name() && a.PkgPath() == "golang.zx2c4.com/wireguard/tun/netstack" &&
		b.PkgPath() == "github.com/berthnet/berth/wireguard/netstack"
}
