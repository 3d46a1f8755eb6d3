package portspec

import (
	"reflect"
	"testing"
)

// FuzzParse: any input parses or fails cleanly; what parses formats to a string that
// reads back as the same Spec, and expands to forwards within the ranges it names.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"none", "8080", "127.0.0.1/8080:80", "1000-1010:2000-2010", "auto",
		"all", "~22", "5-25,~10-20", "::1/all", "192.0.2.1%eth0/22", "0.0.0.0/5000:192.0.2.5/6000",
		"22:::1/23", "[::1]/22", "all:10.0.2.100", "*%lo/80"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sp, err := Parse(s)
		if err != nil {
			return
		}
		again, err := Parse(sp.String())
		if err != nil {
			t.Fatalf("Parse(%q).String() = %q: %v", s, sp.String(), err)
		}
		if !reflect.DeepEqual(again, sp) {
			t.Fatalf("Parse(%q) = %+v; String %q reads back as %+v", s, sp, sp.String(), again)
		}
		if sp.All {
			return // 30,000-odd forwards: checked by TestForwards
		}
		last := 0
		for _, fw := range sp.Forwards(Ephemeral) {
			if int(fw.Listen) <= last {
				t.Fatalf("%q: forwards out of order at %v", s, fw)
			}
			last = int(fw.Listen)
			for _, r := range sp.Exclude {
				if r.Contains(fw.Listen) {
					t.Fatalf("%q: excluded port %d forwarded", s, fw.Listen)
				}
			}
		}
	})
}
