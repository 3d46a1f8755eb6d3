// Command gen turns IANA's service-names-port-numbers.csv into the compact text form that
// package ports embeds (registry_data.txt). Run it with `go generate ./ports`.
//
// Format, one record per line, fields separated by tabs:
//
//	name <TAB> port or low-high or empty <TAB> protocol or empty <TAB> description
//
// A line "+proto" repeats the previous record with another protocol (most services are
// registered for tcp and udp alike). In descriptions, backslash, tab and newline are written
// as \\, \t and \n. The first line is a comment starting with '#'.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"log"
	"os"

	"github.com/berthnet/berth/ports/internal/iana"
)

func main() {
	in := flag.String("in", "internal/iana/service-names-port-numbers.csv", "IANA CSV")
	out := flag.String("out", "registry_data.txt", "output file")
	flag.Parse()
	f, err := os.Open(*in)
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	var buf bytes.Buffer
	if err := iana.Encode(f, &buf); err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(*out, buf.Bytes(), 0o644); err != nil {
		log.Fatal(err)
	}
	fmt.Fprintf(os.Stderr, "gen: wrote %s (%d bytes)\n", *out, buf.Len())
}
