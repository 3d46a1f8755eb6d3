package main

import (
	"reflect"
	"strings"
	"testing"
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
