package berth_test

import (
	"context"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"

	"github.com/berthnet/berth"
)

// MSG_EOR and TCP_NOTSENT_LOWAT on TCPConn: the data arrives whole and in order, and a
// bad mark is EINVAL in a *net.OpError.
func TestTCPConnSendOptions(t *testing.T) {
	a, b := pair(t)
	ctx := context.Background()
	l, err := (&berth.ListenConfig{Stack: a}).Listen(ctx, "tcp", ":9003")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	acc := make(chan net.Conn, 1)
	go func() { c, _ := l.Accept(); acc <- c }()
	nc, err := (&berth.Dialer{Stack: b}).DialContext(ctx, "tcp", "10.0.0.1:9003")
	if err != nil {
		t.Fatal(err)
	}
	c := nc.(*berth.TCPConn)
	sc := <-acc
	defer sc.Close()
	var oe *net.OpError
	if err := c.SetNotSentLowat(-1); !errors.As(err, &oe) || !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("SetNotSentLowat(-1) = %v, want EINVAL in a *net.OpError", err)
	}
	if err := c.SetNotSentLowat(4096); err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 1<<20)
	for i := range big {
		big[i] = byte(i)
	}
	go func() {
		c.WriteEOR([]byte("record"))
		c.Write(big) // blocks while 4096 bytes are unsent, then goes on
		c.Close()
	}()
	got, err := io.ReadAll(sc)
	if err != nil {
		t.Fatal(err)
	}
	if string(got[:6]) != "record" || len(got) != 6+len(big) || string(got[6:]) != string(big) {
		t.Fatalf("read %d bytes, want the record and %d more intact", len(got), len(big))
	}
}
