package portspec

import (
	"errors"
	"net/netip"
	"reflect"
	"testing"
)

func TestParse(t *testing.T) {
	a := netip.MustParseAddr
	tests := []struct {
		in   string
		want Spec
	}{
		{"none", Spec{None: true}},
		{"8080", Spec{Include: []Rule{{Listen: Range{8080, 8080}, Target: Range{8080, 8080}}}}},
		{"8080:80", Spec{Include: []Rule{{Listen: Range{8080, 8080}, Target: Range{80, 80}}}}},
		{"127.0.0.1/8080:80", Spec{Addr: a("127.0.0.1"), Include: []Rule{{Listen: Range{8080, 8080}, Target: Range{80, 80}}}}},
		{"::/8080:80", Spec{Addr: a("::"), Include: []Rule{{Listen: Range{8080, 8080}, Target: Range{80, 80}}}}},
		{"[::1]/22", Spec{Addr: a("::1"), Include: []Rule{{Listen: Range{22, 22}, Target: Range{22, 22}}}}},
		{"1000-1010:2000-2010", Spec{Include: []Rule{{Listen: Range{1000, 1010}, Target: Range{2000, 2010}}}}},
		{"22,25", Spec{Include: []Rule{{Listen: Range{22, 22}, Target: Range{22, 22}}, {Listen: Range{25, 25}, Target: Range{25, 25}}}}},
		{"5-25,~10-20", Spec{Include: []Rule{{Listen: Range{5, 25}, Target: Range{5, 25}}}, Exclude: []Range{{10, 20}}}},
		{"~25", Spec{All: true, Exclude: []Range{{25, 25}}}},
		{"all", Spec{All: true}},
		{"::1/all", Spec{Addr: a("::1"), All: true}},
		{"auto", Spec{All: true, Auto: true}},
		{"192.0.2.1%eth0/22", Spec{Addr: a("192.0.2.1"), Iface: "eth0", Include: []Rule{{Listen: Range{22, 22}, Target: Range{22, 22}}}}},
		{"%eth0/22", Spec{Iface: "eth0", Include: []Rule{{Listen: Range{22, 22}, Target: Range{22, 22}}}}},
		{"*/22", Spec{Include: []Rule{{Listen: Range{22, 22}, Target: Range{22, 22}}}}},
		{"0.0.0.0/5000:192.0.2.5/6000", Spec{Addr: a("0.0.0.0"), Include: []Rule{{Listen: Range{5000, 5000}, Target: Range{6000, 6000}, ToAddr: a("192.0.2.5")}}}},
		{"22:192.0.2.5", Spec{Include: []Rule{{Listen: Range{22, 22}, Target: Range{22, 22}, ToAddr: a("192.0.2.5")}}}},
		{"22:::1/23", Spec{Include: []Rule{{Listen: Range{22, 22}, Target: Range{23, 23}, ToAddr: a("::1")}}}},
		{"::ffff:10.0.0.1/80", Spec{Addr: a("10.0.0.1"), Include: []Rule{{Listen: Range{80, 80}, Target: Range{80, 80}}}}},
	}
	for _, tt := range tests {
		got, err := Parse(tt.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.in, err)
			continue
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("Parse(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
		again, err := Parse(got.String())
		if err != nil || !reflect.DeepEqual(again, got) {
			t.Errorf("Parse(%q).String() = %q reads back as %+v, %v", tt.in, got.String(), again, err)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for _, in := range []string{
		"", "0", "65536", "-1", "+80", "80-", "80-70", "1000-1010:2000-2011", "80:", "80:0",
		"80,", ",80", "~", "~0", "none,80", "abc", "1.2.3.4/", "fe80::1%eth0/80x",
		"%/80", "%abcdefghijklmnopq/80", "%../80", "80:1.2.3.4/", "80:1:2", "all:x", "80 ", "٣",
	} {
		sp, err := Parse(in)
		if err == nil {
			t.Errorf("Parse(%q) = %+v, want an error", in, sp)
			continue
		}
		if !errors.Is(err, ErrSyntax) {
			t.Errorf("Parse(%q): %v does not wrap ErrSyntax", in, err)
		}
	}
}

func TestForwards(t *testing.T) {
	eph := Range{32768, 60999}
	f := func(l, t uint16) Forward { return Forward{Listen: l, Target: t} }
	tests := []struct {
		in   string
		want []Forward
	}{
		{"none", nil},
		{"8080:80", []Forward{f(8080, 80)}},
		{"1000-1002:2000-2002", []Forward{f(1000, 2000), f(1001, 2001), f(1002, 2002)}},
		{"5-9,~6-8", []Forward{f(5, 5), f(9, 9)}},
		{"30,10,20", []Forward{f(10, 10), f(20, 20), f(30, 30)}},
		{"10:11,10:12", []Forward{f(10, 11)}},
	}
	for _, tt := range tests {
		sp, err := Parse(tt.in)
		if err != nil {
			t.Fatal(err)
		}
		if got := sp.Forwards(eph); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%q: Forwards = %v, want %v", tt.in, got, tt.want)
		}
	}
	sp, _ := Parse("~22")
	all := sp.Forwards(eph)
	if want := 65535 - eph.Len() - 1; len(all) != want {
		t.Errorf("~22: %d forwards, want %d", len(all), want)
	}
	for _, fw := range all {
		if fw.Listen == 22 || eph.Contains(fw.Listen) || fw.Listen != fw.Target {
			t.Fatalf("~22: unexpected forward %v", fw)
		}
	}
}
