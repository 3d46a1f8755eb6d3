package sock

import (
	"encoding/binary"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/berthnet/berth/tcp"
)

func procSysctl(name string) (string, bool) {
	b, err := os.ReadFile("/proc/sys/net/" + name)
	if err != nil {
		return "", false
	}
	return strings.TrimSpace(string(b)), true
}

// tcpConfig maps the sysctls a script set (in its namespace) to berth's TCP options, where
// berth has the knob. The kernel's own defaults apply where a sysctl is unreadable.
func tcpConfig(get func(string) (string, bool)) tcp.Config {
	var c tcp.Config
	ints := func(name string) []int {
		v, ok := get(name)
		if !ok {
			return nil
		}
		var out []int
		for _, f := range strings.Fields(v) {
			n, err := strconv.Atoi(f)
			if err != nil {
				return nil
			}
			out = append(out, n)
		}
		return out
	}
	one := func(name string, f func(int)) {
		if v := ints(name); len(v) == 1 {
			f(v[0])
		}
	}
	if v := ints("ipv4/tcp_rmem"); len(v) == 3 {
		c.RMem = [3]int{v[0], v[1], v[2]}
	}
	if v := ints("ipv4/tcp_wmem"); len(v) == 3 {
		c.WMem = [3]int{v[0], v[1], v[2]}
	}
	one("ipv4/tcp_timestamps", func(n int) { c.NoTimestamps = n == 0 })
	one("ipv4/tcp_sack", func(n int) { c.NoSACK = n == 0 })
	one("ipv4/tcp_syn_retries", func(n int) { c.SynRetries = max(n, 1) })
	one("ipv4/tcp_synack_retries", func(n int) { c.SynAckRetries = max(n, 1) })
	one("ipv4/tcp_retries2", func(n int) { c.Retries = max(n, 1) })
	one("ipv4/tcp_syncookies", func(n int) { c.SynCookies = tcp.SynCookiesSysctl(n) })
	one("ipv4/tcp_fin_timeout", func(n int) { c.FinTimeout = time.Duration(max(n, 1)) * time.Second })
	one("ipv4/tcp_max_tw_buckets", func(n int) {
		if n == 0 {
			n = -1
		}
		c.MaxTimeWait = n
	})
	one("ipv4/tcp_notsent_lowat", func(n int) {
		if n > 0 && n < 1<<31 { // the default, UINT_MAX, is no mark
			c.NotSentLowat = n
		}
	})
	one("ipv4/tcp_challenge_ack_limit", func(n int) { c.ChallengeACKLimit = max(n, 1) })
	one("ipv4/tcp_fastopen", func(n int) {
		if n == 0 {
			n = -1
		}
		c.FastOpen = n
	})
	c.ECN = tcpECN(ecnSysctl(get))
	if v, ok := get("ipv4/tcp_fastopen_key"); ok {
		// "a1a1a1a1-b2b2b2b2-c3c3c3c3-d4d4d4d4[,backup]": four 32-bit words, kept
		// little-endian as Linux keeps them.
		primary, _, _ := strings.Cut(v, ",")
		if words := strings.Split(primary, "-"); len(words) == 4 {
			for i, w := range words {
				n, err := strconv.ParseUint(w, 16, 32)
				if err != nil {
					break
				}
				binary.LittleEndian.PutUint32(c.FastOpenKey[4*i:], uint32(n))
			}
		}
	}
	if v, ok := get("ipv4/tcp_congestion_control"); ok && (v == "cubic" || v == "reno") {
		c.CongestionControl = v
	}
	return c
}

// ecnSysctl is tcp_ecn (0 off, 1 request and accept, 2 accept only), 2 (Linux's
// default) when unreadable.
func ecnSysctl(get func(string) (string, bool)) int {
	if v, ok := get("ipv4/tcp_ecn"); ok {
		if n, err := strconv.Atoi(v); err == nil {
			return n
		}
	}
	return tcp.ECNAccept
}

// tcpECN maps tcp_ecn to tcp.Config.ECN, where zero means the default and off is
// negative.
func tcpECN(n int) int {
	if n <= 0 {
		return -1
	}
	return n
}

// keepalive defaults (tcp_keepalive_time, _intvl, _probes), for SO_KEEPALIVE without the
// TCP_KEEP* options.
func keepDefaults(get func(string) (string, bool)) (idle, intvl time.Duration, cnt int) {
	idle, intvl, cnt = 7200*time.Second, 75*time.Second, 9
	if v, ok := get("ipv4/tcp_keepalive_time"); ok {
		if n, err := strconv.Atoi(v); err == nil {
			idle = time.Duration(n) * time.Second
		}
	}
	if v, ok := get("ipv4/tcp_keepalive_intvl"); ok {
		if n, err := strconv.Atoi(v); err == nil {
			intvl = time.Duration(n) * time.Second
		}
	}
	if v, ok := get("ipv4/tcp_keepalive_probes"); ok {
		if n, err := strconv.Atoi(v); err == nil {
			cnt = n
		}
	}
	return
}
