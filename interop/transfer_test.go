//go:build linux

package interop

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berthnet/berth/internal/netns"
	"github.com/berthnet/berth/link"
	"github.com/berthnet/berth/link/impair"
	"github.com/berthnet/berth/link/tun"
)

// path describes how bad the path between berth and the kernel is.
type path struct {
	// kernelDrop is the percentage of packets the kernel drops on input (an nftables
	// `numgen random mod 100 < N drop` rule in the namespace): loss of what berth sends.
	// The rule sits on input because a drop on the kernel's output is reported to its TCP
	// as a local transmit failure (the segment is requeued), not as loss on the network.
	kernelDrop int
	// inboundLoss is the probability that berth's side of the link drops a packet the
	// kernel sent: loss of what the kernel sends.
	inboundLoss float64
	// impair adds berth-side impairments in both directions (Inbound is set).
	impair *impair.Config
}

// newPathHost builds a host on p. Impaired paths run without the vnet header, so that
// every packet either way is MTU-sized (no TSO super-segments from the kernel, no GSO ones
// from berth) and every loss or reordering hits one packet, not 64 KiB at once.
func newPathHost(t testing.TB, p path) *host {
	t.Helper()
	clean := p.impair == nil && p.inboundLoss == 0
	cfg := hostConfig{tun: tun.Options{VnetHdr: clean}, inboundLoss: p.inboundLoss}
	if p.impair != nil {
		ic := *p.impair
		ic.Inbound = true
		cfg.impair = &ic
	}
	h := newHost(t, cfg)
	if p.kernelDrop > 0 {
		h.NS.DropRandom(t, "input", p.kernelDrop)
	}
	return h
}

// report logs what the path did to the traffic.
func (h *host) report(t testing.TB) {
	t.Helper()
	if h.imp != nil {
		t.Logf("link/impair outbound: %+v", h.imp.Stats())
		t.Logf("link/impair inbound:  %+v", h.imp.InboundStats())
	}
	if h.lossy != nil {
		t.Logf("inbound loss: %d packets dropped", h.lossy.Dropped())
	}
	if out, err := h.NS.Output("nft", "list", "table", "inet", netns.DropTable); err == nil {
		t.Logf("kernel nftables:\n%s", out)
	}
	t.Logf("berth TCP: %s", tcpStats(h))
}

// tcpStats formats every nonzero counter of berth's tcp.Stats. It walks the struct by
// reflection so that counters added to tcp (SACK, RACK-TLP, ...) show up without this
// package naming them.
func tcpStats(h *host) string {
	v := reflect.ValueOf(&h.Stack.TCP().Stats).Elem()
	var b strings.Builder
	for i := range v.NumField() {
		if !v.Type().Field(i).IsExported() {
			continue
		}
		c, ok := v.Field(i).Interface().(*atomic.Uint64)
		if !ok || c.Load() == 0 {
			continue
		}
		fmt.Fprintf(&b, "%s %d ", v.Type().Field(i).Name, c.Load())
	}
	return strings.TrimSpace(b.String())
}

// lossyInbound drops each packet the inner endpoint delivers with probability p, from a
// seeded stream. link/impair impairs inbound packets only together with outbound ones;
// this gives the kernel-to-berth direction loss of its own while outbound loss comes from
// the kernel's nftables rule.
type lossyInbound struct {
	link.Endpoint
	p float64

	mu      sync.Mutex
	rng     *rand.Rand
	dropped uint64
	kept    [][]byte
}

func newLossyInbound(inner link.Endpoint, p float64, seed uint64) *lossyInbound {
	return &lossyInbound{Endpoint: inner, p: p, rng: rand.New(rand.NewPCG(seed, seed^0x5eed))}
}

func (l *lossyInbound) Attach(d link.Dispatcher) {
	if d == nil {
		l.Endpoint.Attach(nil)
		return
	}
	l.Endpoint.Attach(link.DispatcherFunc(func(pkts [][]byte) {
		l.mu.Lock()
		kept := l.kept[:0]
		for _, p := range pkts {
			if l.rng.Float64() < l.p {
				l.dropped++
				continue
			}
			kept = append(kept, p)
		}
		l.kept = kept[:0]
		l.mu.Unlock()
		// The inner endpoint delivers from one goroutine, so kept is not reused under us.
		if len(kept) > 0 {
			d.DeliverPackets(kept)
		}
	}))
}

func (l *lossyInbound) Dropped() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.dropped
}

// bulk runs the two transfers of the kernel-interop issue on h: curl in the namespace
// fetches n bytes from berth's GET /bytes/n over a, and berth fetches n bytes from a
// net/http server on a kernel socket over b; both SHA-256 checked.
func bulk(t *testing.T, h *host, a, b netip.Addr, n int64, timeout time.Duration) {
	needCommand(t, "curl")
	h.berthHTTP(t)
	h.kernelHTTP(t)
	patternSum(n)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	x, err := h.curl(ctx, url(a, 80, fmt.Sprintf("/bytes/%d", n)))
	checkTransfer(t, "curl <- berth "+a.String(), x, err, n)
	x, err = h.berthGet(ctx, url(b, 8080, fmt.Sprintf("/bytes/%d", n)))
	checkTransfer(t, "berth <- kernel "+b.String(), x, err, n)
}

// TestBulk: on a clean path (vnet-header offloads on), curl in the namespace fetches
// bulkSize bytes from berth over IPv4 and berth fetches bulkSize bytes from a kernel
// net/http server over IPv6, both byte-exact.
func TestBulk(t *testing.T) {
	h := newPathHost(t, path{})
	bulk(t, h, berth4, kern6, bulkSize, 3*time.Minute)
	h.report(t)
}

// TestBulkImpaired: the same two transfers (families swapped) on an impaired path, still
// byte-exact: the kernel drops 2% of what it receives (nftables), and berth's side of the
// link loses 1%, delays by 10 ms and reorders 5% of the packets in each direction.
func TestBulkImpaired(t *testing.T) {
	h := newPathHost(t, path{kernelDrop: 2, impair: &impair.Config{
		Seed: 2, Loss: 0.01, Delay: 10 * time.Millisecond, Reorder: 0.05, ReorderDelay: 5 * time.Millisecond,
	}})
	bulk(t, h, berth6, kern4, impairedSize, 10*time.Minute)
	h.report(t)
}

// TestBulkLossy (TCP II): both transfers byte-exact with 5% loss, 25% reordering and
// 20 ms delay in each direction. Loss of what berth sends comes from the kernel's
// nftables rule (5% on input), loss of what the kernel sends from berth's side of the
// link (5% inbound); link/impair delays every packet by 20 ms and holds back 25% of them
// 10 ms longer, so later packets overtake them, in both directions.
func TestBulkLossy(t *testing.T) {
	h := newPathHost(t, path{kernelDrop: 5, inboundLoss: 0.05, impair: &impair.Config{
		Seed: 5, Delay: 20 * time.Millisecond, Reorder: 0.25, ReorderDelay: 10 * time.Millisecond,
	}})
	bulk(t, h, berth4, kern4, impairedSize, 10*time.Minute)
	h.report(t)
}
