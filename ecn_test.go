package berth_test

import (
	"testing"

	"github.com/berthnet/berth"
	"github.com/berthnet/berth/tcp"
)

// WithECN reaches TCP, and survives a WithTCPConfig given before it; the default is
// Linux's (accept only).
func TestWithECN(t *testing.T) {
	for _, c := range []struct {
		opts []berth.Option
		want int
	}{
		{nil, tcp.ECNAccept},
		{[]berth.Option{berth.WithTCPConfig(tcp.Config{}), berth.WithECN(tcp.ECNRequest)}, tcp.ECNRequest},
		{[]berth.Option{berth.WithECN(-1)}, 0},
	} {
		st := berth.New(c.opts...)
		if got := st.TCP().ECN(); got != c.want {
			t.Errorf("ECN() = %d, want %d", got, c.want)
		}
		st.Close()
	}
}
