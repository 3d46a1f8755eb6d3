package services

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"time"
)

// rfc864Example is the example in RFC 864 ("Data Syntax"), transcribed line by line; it
// runs through a wrap of the ring (the space after '~', then '!').
var rfc864Example = []string{
	`!"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\]^_` + "`abcdefgh",
	`"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\]^_` + "`abcdefghi",
	`#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\]^_` + "`abcdefghij",
	`$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\]^_` + "`abcdefghijk",
	`%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\]^_` + "`abcdefghijkl",
	`&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\]^_` + "`abcdefghijklm",
	`'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\]^_` + "`abcdefghijklmn",
	`()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\]^_` + "`abcdefghijklmno",
	`)*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\]^_` + "`abcdefghijklmnop",
	`*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\]^_` + "`abcdefghijklmnopq",
	`+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\]^_` + "`abcdefghijklmnopqr",
	`,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\]^_` + "`abcdefghijklmnopqrs",
	`-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\]^_` + "`abcdefghijklmnopqrst",
	`./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\]^_` + "`abcdefghijklmnopqrstu",
	`/0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\]^_` + "`abcdefghijklmnopqrstuv",
	`0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\]^_` + "`abcdefghijklmnopqrstuvw",
	`123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\]^_` + "`abcdefghijklmnopqrstuvwx",
	`23456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\]^_` + "`abcdefghijklmnopqrstuvwxy",
	`3456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\]^_` + "`abcdefghijklmnopqrstuvwxyz",
	`456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\]^_` + "`abcdefghijklmnopqrstuvwxyz{",
	`56789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\]^_` + "`abcdefghijklmnopqrstuvwxyz{|",
	`6789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\]^_` + "`abcdefghijklmnopqrstuvwxyz{|}",
	`789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\]^_` + "`abcdefghijklmnopqrstuvwxyz{|}~",
	`89:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\]^_` + "`abcdefghijklmnopqrstuvwxyz{|}~ ",
	`9:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\]^_` + "`abcdefghijklmnopqrstuvwxyz{|}~ !",
	`:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\]^_` + "`abcdefghijklmnopqrstuvwxyz{|}~ !\"",
	`;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\]^_` + "`abcdefghijklmnopqrstuvwxyz{|}~ !\"#",
	`<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\]^_` + "`abcdefghijklmnopqrstuvwxyz{|}~ !\"#$",
	`=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\]^_` + "`abcdefghijklmnopqrstuvwxyz{|}~ !\"#$%",
	`>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\]^_` + "`abcdefghijklmnopqrstuvwxyz{|}~ !\"#$%&",
	`?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\]^_` + "`abcdefghijklmnopqrstuvwxyz{|}~ !\"#$%&'",
	`@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\]^_` + "`abcdefghijklmnopqrstuvwxyz{|}~ !\"#$%&'(",
	`ABCDEFGHIJKLMNOPQRSTUVWXYZ[\]^_` + "`abcdefghijklmnopqrstuvwxyz{|}~ !\"#$%&'()",
	`BCDEFGHIJKLMNOPQRSTUVWXYZ[\]^_` + "`abcdefghijklmnopqrstuvwxyz{|}~ !\"#$%&'()*",
	`CDEFGHIJKLMNOPQRSTUVWXYZ[\]^_` + "`abcdefghijklmnopqrstuvwxyz{|}~ !\"#$%&'()*+",
	`DEFGHIJKLMNOPQRSTUVWXYZ[\]^_` + "`abcdefghijklmnopqrstuvwxyz{|}~ !\"#$%&'()*+,",
	`EFGHIJKLMNOPQRSTUVWXYZ[\]^_` + "`abcdefghijklmnopqrstuvwxyz{|}~ !\"#$%&'()*+,-",
	`FGHIJKLMNOPQRSTUVWXYZ[\]^_` + "`abcdefghijklmnopqrstuvwxyz{|}~ !\"#$%&'()*+,-.",
	`GHIJKLMNOPQRSTUVWXYZ[\]^_` + "`abcdefghijklmnopqrstuvwxyz{|}~ !\"#$%&'()*+,-./",
	`HIJKLMNOPQRSTUVWXYZ[\]^_` + "`abcdefghijklmnopqrstuvwxyz{|}~ !\"#$%&'()*+,-./0",
	`IJKLMNOPQRSTUVWXYZ[\]^_` + "`abcdefghijklmnopqrstuvwxyz{|}~ !\"#$%&'()*+,-./01",
	`JKLMNOPQRSTUVWXYZ[\]^_` + "`abcdefghijklmnopqrstuvwxyz{|}~ !\"#$%&'()*+,-./012",
	`KLMNOPQRSTUVWXYZ[\]^_` + "`abcdefghijklmnopqrstuvwxyz{|}~ !\"#$%&'()*+,-./0123",
	`LMNOPQRSTUVWXYZ[\]^_` + "`abcdefghijklmnopqrstuvwxyz{|}~ !\"#$%&'()*+,-./01234",
	`MNOPQRSTUVWXYZ[\]^_` + "`abcdefghijklmnopqrstuvwxyz{|}~ !\"#$%&'()*+,-./012345",
	`NOPQRSTUVWXYZ[\]^_` + "`abcdefghijklmnopqrstuvwxyz{|}~ !\"#$%&'()*+,-./0123456",
}

// checkChargen checks that b is a prefix of the chargen stream: it begins with RFC 864's
// example, and every line after that starts one character later in the ring.
func checkChargen(t *testing.T, b []byte) {
	t.Helper()
	lines := strings.SplitAfter(string(b), "\r\n")
	for i, got := range lines {
		want := chargenLineForTest(i) + "\r\n"
		if i < len(rfc864Example) && rfc864Example[i]+"\r\n" != want {
			t.Fatalf("test bug: line %d of the example disagrees with chargenLineForTest", i)
		}
		if i == len(lines)-1 {
			want = want[:len(got)] // a partial last line
		}
		if got != want {
			t.Fatalf("chargen line %d = %q, want %q", i, got, want)
		}
	}
}

// chargenLineForTest is line i (from 0) of the stream, computed independently of the
// package from the first example line: each line rotates the ring by one character.
func chargenLineForTest(i int) string {
	const ring = ` !"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\]^_` + "`abcdefghijklmnopqrstuvwxyz{|}~"
	if len(ring) != 95 {
		panic("ring")
	}
	var b strings.Builder
	for j := range 72 {
		b.WriteByte(ring[(1+i+j)%95])
	}
	return b.String()
}

func TestChargenReaderMatchesRFC864Example(t *testing.T) {
	var r ChargenReader
	// Read in odd sizes across more than two periods.
	var got bytes.Buffer
	buf := make([]byte, 997)
	for got.Len() < 2*ChargenPeriod+500 {
		n, err := r.Read(buf)
		if err != nil || n != len(buf) {
			t.Fatalf("Read = %d, %v", n, err)
		}
		got.Write(buf)
	}
	for i, want := range rfc864Example {
		line, err := got.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if line != want+"\r\n" {
			t.Fatalf("line %d = %q, want RFC 864's %q", i, line, want)
		}
	}
	var all ChargenReader
	b := make([]byte, 3*ChargenPeriod)
	io.ReadFull(&all, b)
	checkChargen(t, b)
	if !bytes.Equal(b[:ChargenPeriod], b[ChargenPeriod:2*ChargenPeriod]) {
		t.Error("stream does not repeat after ChargenPeriod bytes")
	}
}

func TestDaytimeText(t *testing.T) {
	// RFC 867's example is "Tuesday, February 22, 1982 17:37:43-PST", but 22 February
	// 1982 was a Monday: the syntax is the RFC's, the weekday the calendar's.
	pst := time.FixedZone("PST", -8*3600)
	got := DaytimeText(time.Date(1982, 2, 22, 17, 37, 43, 0, pst))
	if want := "Monday, February 22, 1982 17:37:43-PST\r\n"; got != want {
		t.Errorf("DaytimeText = %q, want %q", got, want)
	}
}

func BenchmarkChargenReader(b *testing.B) {
	var r ChargenReader
	buf := make([]byte, 32<<10)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		r.Read(buf)
	}
}
