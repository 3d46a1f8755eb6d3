package main

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/berthnet/berth/forward"
	"github.com/berthnet/berth/forward/portspec"
)

// Lines as Linux prints /proc/net/tcp and tcp6 (little-endian words).
const procTCP = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 0100007F:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 100 0 0 10 0
   2: 6402000A:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3 1 0000000000000000 100 0 0 10 0
   3: 6402000A:1F92 0202000A:C350 01 00000000:00000000 00:00000000 00000000     0        0 4 1 0000000000000000 100 0 0 10 0
`
const procTCP6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:0017 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 6 1 0000000000000000 100 0 0 10 0
   2: 0000000000000000FFFF00000100007F:0018 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 7 1 0000000000000000 100 0 0 10 0
`

func TestProcListeners(t *testing.T) {
	got := map[uint16]bool{}
	procListeners(strings.NewReader(procTCP), "0A", false, got)
	procListeners(strings.NewReader(procTCP6), "0A", false, got)
	// 8080 on 0.0.0.0, 8081 on 10.0.2.100, 22 on ::; not 80 on 127.0.0.1, 23 on ::1,
	// 24 on ::ffff:127.0.0.1, nor the connected 8082.
	if want := map[uint16]bool{8080: true, 8081: true, 22: true}; !reflect.DeepEqual(got, want) {
		t.Errorf("listeners %v, want %v", got, want)
	}
}

// FuzzProcListeners: any table text is read without a panic.
func FuzzProcListeners(f *testing.F) {
	f.Add(procTCP)
	f.Add(procTCP6)
	f.Fuzz(func(t *testing.T, s string) {
		procListeners(strings.NewReader(s), "0A", false, map[uint16]bool{})
	})
}

// fakeNSPorts records nsAutoForward's changes; fail's ports are refused.
type fakeNSPorts struct {
	added, removed []nsMapping
	fail           map[uint16]bool
}

func (f *fakeNSPorts) Add(ms []nsMapping) []error {
	errs := make([]error, len(ms))
	for i, m := range ms {
		f.added = append(f.added, m)
		if f.fail[m.NSPort] {
			errs[i] = errors.New("taken")
		}
	}
	return errs
}

func (f *fakeNSPorts) Remove(m nsMapping) error { f.removed = append(f.removed, m); return nil }

// TestNSAutoScan: -T auto forwards the host's listeners, loopback ones included, but
// not ephemeral ports nor berth's own -t ports; a forward that fails waits
// nsAutoRetry before the next try; a listener that goes takes its forward along.
func TestNSAutoScan(t *testing.T) {
	dir := t.TempDir()
	write := func(tcp string) {
		if err := os.WriteFile(filepath.Join(dir, "tcp"), []byte(tcp), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// procTCP: 8080 on 0.0.0.0, 80 on 127.0.0.1, 8081 on 10.0.2.100; tcp6 is absent.
	// Add 40000 (ephemeral) on 127.0.0.1.
	write(procTCP + "   4: 0100007F:9C40 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 8 1 0000000000000000 100 0 0 10 0\n")
	auto, _ := portspec.Parse("auto")
	fake := &fakeNSPorts{fail: map[uint16]bool{8081: true}}
	clock := time.Unix(1000, 0)
	a := &nsAutoForward{fwd: fake, specs: map[string][]portspec.Spec{"tcp": {auto}}, procNet: dir,
		hostPorts: func() []forward.PortMapping { return []forward.PortMapping{{Proto: "tcp", HostPort: 8080, NSPort: 80}} },
		have:      map[nsMapping]bool{}, now: func() time.Time { return clock }}
	a.scan()
	want := []nsMapping{{"tcp", 80, 80}, {"tcp", 8081, 8081}}
	if !reflect.DeepEqual(fake.added, want) {
		t.Errorf("first scan added %v, want %v", fake.added, want)
	}
	fake.added = nil
	clock = clock.Add(time.Second)
	a.scan()
	if len(fake.added) != 0 {
		t.Errorf("a scan 1 s later added %v (the failed 8081 waits %v)", fake.added, nsAutoRetry)
	}
	clock = clock.Add(nsAutoRetry)
	a.scan()
	if want := []nsMapping{{"tcp", 8081, 8081}}; !reflect.DeepEqual(fake.added, want) {
		t.Errorf("after %v added %v, want %v", nsAutoRetry, fake.added, want)
	}
	write(strings.SplitAfterN(procTCP, "\n", 2)[0]) // the header only: nothing listens
	a.scan()
	if want := []nsMapping{{"tcp", 80, 80}}; !reflect.DeepEqual(fake.removed, want) {
		t.Errorf("removed %v, want %v", fake.removed, want)
	}
}

// TestBoundPortsUDPMirrorsTCP: -u auto and -U auto see the bound UDP sockets and, as
// pasta's, the TCP listeners' numbers too (iperf3's control port and its UDP stream);
// -t auto sees TCP's listeners only.
func TestBoundPortsUDPMirrorsTCP(t *testing.T) {
	dir := t.TempDir()
	// 5353 bound on 0.0.0.0 (07: unconnected), 5354 connected (01): only the first counts.
	udp := strings.SplitAfterN(procTCP, "\n", 2)[0] +
		"   0: 00000000:14E9 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 9 2 0000000000000000 0\n" +
		"   1: 00000000:14EA 0202000A:0035 01 00000000:00000000 00:00000000 00000000     0        0 10 2 0000000000000000 0\n"
	for name, text := range map[string]string{"tcp": procTCP, "tcp6": procTCP6, "udp": udp} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got := map[uint16]bool{}
	boundPorts(dir, "udp", false, got)
	if want := map[uint16]bool{5353: true, 8080: true, 8081: true, 22: true}; !reflect.DeepEqual(got, want) {
		t.Errorf("udp auto sees %v, want %v", got, want)
	}
	got = map[uint16]bool{}
	boundPorts(dir, "tcp", false, got)
	if want := map[uint16]bool{8080: true, 8081: true, 22: true}; !reflect.DeepEqual(got, want) {
		t.Errorf("tcp auto sees %v, want %v", got, want)
	}
}
