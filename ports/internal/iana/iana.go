// Package iana converts IANA's service-names-port-numbers.csv into the compact text form
// that package ports embeds. It is shared by the generator (gen/) and by ports' up-to-date
// test.
package iana

import (
	"bufio"
	"encoding/csv"
	"fmt"
	"io"
	"strings"
)

// Header is the first line of the generated file.
const Header = "# IANA service names and port numbers (public domain, CC0). Generated from internal/iana/service-names-port-numbers.csv by `go generate ./ports`; DO NOT EDIT.\n"

// Encode reads the CSV from r and writes the compact form to w; it returns an error on a
// malformed CSV (a header that is not IANA's, a record with too few fields).
func Encode(r io.Reader, w io.Writer) error {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	head, err := cr.Read()
	if err != nil {
		return fmt.Errorf("iana: reading header: %w", err)
	}
	if len(head) < 4 || head[0] != "Service Name" || head[1] != "Port Number" ||
		head[2] != "Transport Protocol" || head[3] != "Description" {
		return fmt.Errorf("iana: unexpected header %q", head)
	}
	bw := bufio.NewWriter(w)
	bw.WriteString(Header)
	var prev []string
	for line := 2; ; line++ {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("iana: %w", err)
		}
		if len(rec) < 4 {
			return fmt.Errorf("iana: record %d has %d fields", line, len(rec))
		}
		name, port, proto, desc := rec[0], rec[1], rec[2], escape(rec[3])
		if strings.ContainsAny(name+port+proto, "\t\n\\") || strings.HasPrefix(name, "+") {
			return fmt.Errorf("iana: record %d: unexpected characters in %q", line, rec[:3])
		}
		if prev != nil && prev[0] == name && prev[1] == port && prev[3] == desc && proto != "" {
			fmt.Fprintf(bw, "+%s\n", proto)
		} else {
			fmt.Fprintf(bw, "%s\t%s\t%s\t%s\n", name, port, proto, desc)
		}
		prev = []string{name, port, proto, desc}
	}
	return bw.Flush()
}

var escaper = strings.NewReplacer("\\", `\\`, "\t", `\t`, "\r\n", `\n`, "\n", `\n`, "\r", `\n`)

func escape(s string) string { return escaper.Replace(strings.TrimSpace(s)) }
