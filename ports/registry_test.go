package ports

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/berthnet/berth/ports/internal/iana"
)

// TestRegistryUpToDate checks that the embedded data is exactly what the generator makes
// from the CSV, and that it holds every one of the CSV's 14,447 records.
func TestRegistryUpToDate(t *testing.T) {
	f, err := os.Open("internal/iana/service-names-port-numbers.csv")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var buf bytes.Buffer
	if err := iana.Encode(f, &buf); err != nil {
		t.Fatal(err)
	}
	if buf.String() != registryData {
		t.Fatal("registry_data.txt is stale: run `go generate ./ports`")
	}
	if n := len(Services()); n != 14447 {
		t.Fatalf("registry has %d records, want 14447", n)
	}
	var noPort, ranges int
	for _, s := range Services() {
		if !s.HasPort {
			noPort++
		} else if s.PortHigh != s.Port {
			ranges++
		}
	}
	// Counted independently with encoding/csv: 1,039 records without a port, 756 written
	// as ranges, 6 of which are one port ("4748-4748").
	if noPort != 1039 || ranges != 750 {
		t.Errorf("records without port = %d (want 1039), ranges = %d (want 750)", noPort, ranges)
	}
}

func TestEncodeRejectsBadCSV(t *testing.T) {
	for _, in := range []string{"", "a,b,c,d\n", "Service Name,Port Number,Transport Protocol,Description\nx\n", "Service Name,Port Number,Transport Protocol,Description\n\"unterminated\n"} {
		if err := iana.Encode(strings.NewReader(in), &bytes.Buffer{}); err == nil {
			t.Errorf("Encode(%q) succeeded", in)
		}
	}
}

func TestLookupService(t *testing.T) {
	got := LookupService("https", "")
	var protos []string
	for _, s := range got {
		if s.HasPort {
			if s.Port != 443 {
				t.Errorf("https record with port %d", s.Port)
			}
			protos = append(protos, s.Protocol)
		}
	}
	if strings.Join(protos, ",") != "tcp,udp,sctp" {
		t.Errorf("https protocols = %v, want tcp,udp,sctp", protos)
	}
	// IANA also lists "https" for tcp without a port (a name for SRV records): 2 records.
	if s := LookupService("HTTPS", "tcp"); len(s) != 2 || s[0].Port != 443 || s[0].Description != "http protocol over TLS/SSL" || s[1].HasPort {
		t.Errorf("LookupService(HTTPS, tcp) = %+v", s)
	}
	x := LookupService("x11", "tcp")
	if len(x) != 1 || x[0].Port != 6000 || x[0].PortHigh != 6063 || x[0].PortString() != "6000-6063" {
		t.Errorf("x11 = %+v", x)
	}
	if s := LookupService("htps", ""); s != nil {
		t.Errorf("htps = %+v", s)
	}
	// Some name registered without a port number is found too.
	var np *Service
	for _, s := range Services() {
		if !s.HasPort && s.Name != "" {
			np = &s
			break
		}
	}
	if np == nil {
		t.Fatal("no portless name")
	}
	found := false
	for _, s := range LookupService(np.Name, "") {
		found = found || !s.HasPort
	}
	if !found || np.PortString() != "-" {
		t.Errorf("portless name %q not found by LookupService", np.Name)
	}
}

func TestLookupPort(t *testing.T) {
	if s := LookupPort(22, "tcp"); len(s) != 1 || s[0].Name != "ssh" {
		t.Errorf("LookupPort(22, tcp) = %+v", s)
	}
	if s := LookupPort(6010, "udp"); len(s) == 0 || s[len(s)-1].Name != "x11" {
		t.Errorf("LookupPort(6010, udp) = %+v, want x11 (range)", s)
	}
	if n := ServiceName(443, "tcp"); n != "https" {
		t.Errorf("ServiceName(443) = %q", n)
	}
	if n := ServiceName(6063, ""); n != "x11" {
		t.Errorf("ServiceName(6063) = %q", n)
	}
	if n := ServiceName(65535, "tcp"); n != "" {
		t.Errorf("ServiceName(65535) = %q", n)
	}
	if a := testing.AllocsPerRun(100, func() { ServiceName(443, "tcp") }); a != 0 {
		t.Errorf("ServiceName allocates %v", a)
	}
}

func TestParsePort(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Port
		err  string
		kind error
	}{
		{"443", 443, "", nil},
		{"0", 0, "", nil},
		{"65535", 65535, "", nil},
		{"https", 443, "", nil},
		{"SSH", 22, "", nil},
		{"x11", 6000, "", nil},
		{"70000", 0, "port 70000 out of range 0-65535", ErrPortRange},
		{"-1", 0, "port -1 out of range 0-65535", ErrPortRange},
		{"99999999999999999999999", 0, "port 99999999999999999999999 out of range 0-65535", ErrPortRange},
		{"htps", 0, `unknown service "htps"`, ErrUnknownService},
		{"44 3", 0, `unknown service "44 3"`, ErrUnknownService},
		{"", 0, "empty port", ErrEmptyPort},
	} {
		p, err := ParsePort(c.in)
		if c.err == "" {
			if err != nil || p != c.want {
				t.Errorf("ParsePort(%q) = %d, %v; want %d", c.in, p, err, c.want)
			}
			continue
		}
		if err == nil || err.Error() != c.err || !errors.Is(err, c.kind) {
			t.Errorf("ParsePort(%q) error = %v; want %q", c.in, err, c.err)
		}
	}
}

func TestCategory(t *testing.T) {
	for _, c := range []struct {
		p    Port
		want string
	}{{0, "system (well-known)"}, {1023, "system (well-known)"}, {1024, "user (registered)"},
		{49151, "user (registered)"}, {49152, "dynamic (ephemeral)"}, {65535, "dynamic (ephemeral)"}} {
		if got := c.p.Category().String(); got != c.want {
			t.Errorf("%d: %s, want %s", c.p, got, c.want)
		}
		if !c.p.Category().Range().Contains(c.p) {
			t.Errorf("%d not in its category's range", c.p)
		}
	}
}

func FuzzParsePort(f *testing.F) {
	for _, s := range []string{"443", "https", "", "70000", "-0", "+1", "x11"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePort(s)
		if err != nil {
			if p != 0 || err.Error() == "" {
				t.Fatalf("ParsePort(%q) = %d, %v", s, p, err)
			}
			return
		}
		if isNumber(s) {
			if q, err := ParsePort(p.String()); err != nil || q != p {
				t.Fatalf("round trip %q -> %d -> %d, %v", s, p, q, err)
			}
		} else if len(LookupService(s, "")) == 0 {
			t.Fatalf("ParsePort(%q) = %d but no such service", s, p)
		}
	})
}

func BenchmarkParsePort(b *testing.B) {
	theRegistry()
	b.ReportAllocs()
	for _, in := range []string{"443", "https"} {
		b.Run(in, func(b *testing.B) {
			for b.Loop() {
				if _, err := ParsePort(in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkLookupService(b *testing.B) {
	theRegistry()
	b.ReportAllocs()
	for b.Loop() {
		if len(LookupService("https", "tcp")) != 2 {
			b.Fatal("https")
		}
	}
}

func BenchmarkLookupPort(b *testing.B) {
	theRegistry()
	b.ReportAllocs()
	for b.Loop() {
		if len(LookupPort(443, "tcp")) != 1 {
			b.Fatal("443")
		}
	}
}

func BenchmarkServiceName(b *testing.B) {
	theRegistry()
	b.ReportAllocs()
	for b.Loop() {
		if ServiceName(443, "tcp") != "https" {
			b.Fatal("443")
		}
	}
}

func BenchmarkRegistryParse(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		parseRegistry(registryData)
	}
}
