package sock

import (
	"encoding/binary"
	"syscall"
	"time"

	"github.com/berthnet/berth/tcp"
)

// Option levels and names (Linux's values).
const (
	solSocket = 1
	solIP     = 0
	solTCP    = 6
	solIPv6   = 41

	soReuseAddr = 2
	soType      = 3
	soError     = 4
	soSndBuf    = 7
	soRcvBuf    = 8
	soKeepAlive = 9
	soLinger    = 13
	soReusePort = 15
	soRcvLowat  = 18
	soRcvTimeo  = 20
	soSndTimeo  = 21
	soAcceptCon = 30
	soProtocol  = 38
	soDomain    = 39
	soZerocopy  = 60

	ipFreebind = 15

	tcpNodelay      = 1
	tcpMaxseg       = 2
	tcpCork         = 3
	tcpKeepIdle     = 4
	tcpKeepIntvl    = 5
	tcpKeepCnt      = 6
	tcpSynCnt       = 7
	tcpInfo         = 11
	tcpQuickAck     = 12
	tcpUserTmo      = 18
	tcpCongest      = 13
	tcpFastOpen     = 23
	tcpNotSentLowat = 25
	tcpCCInfo       = 26
	tcpFOConnect    = 30
	tcpInq          = 36
	soMeminfo       = 55

	ipv6V6Only = 26
)

var ne = binary.NativeEndian

func getInt(b []byte) (int, syscall.Errno) {
	if len(b) < 4 {
		return 0, syscall.EINVAL
	}
	return int(int32(ne.Uint32(b))), 0
}

func putInt(b []byte, v int) int {
	if len(b) < 4 {
		return 0
	}
	ne.PutUint32(b, uint32(int32(v)))
	return 4
}

// timeval reads a struct timeval (SO_RCVTIMEO, SO_SNDTIMEO).
func timeval(b []byte) (time.Duration, syscall.Errno) {
	if len(b) < 16 {
		return 0, syscall.EINVAL
	}
	return time.Duration(int64(ne.Uint64(b)))*time.Second + time.Duration(int64(ne.Uint64(b[8:])))*time.Microsecond, 0
}

// SetSockopt is setsockopt(2) for the options berth has.
func (h *Host) SetSockopt(fd, level, name int, val []byte) syscall.Errno {
	h.enter()
	defer h.leave()
	s, e := h.sock(fd)
	if e != 0 {
		return e
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if level == solTCP && name == tcpCongest {
		n := 0
		for n < len(val) && val[n] != 0 {
			n++
		}
		name := string(val[:n])
		if name != "cubic" && name != "reno" {
			return syscall.ENOENT
		}
		s.o.cc = name
		return s.setConn(func(c *tcp.Conn) error { return c.SetCongestionControl(name) })
	}
	if level == solSocket && (name == soRcvTimeo || name == soSndTimeo) {
		d, e := timeval(val)
		if e != 0 {
			return e
		}
		if name == soRcvTimeo {
			s.o.rcvtimeo = d
		} else {
			s.o.sndtimeo = d
		}
		return 0
	}
	if level == solSocket && name == soLinger {
		if len(val) < 8 {
			return syscall.EINVAL
		}
		on, sec := ne.Uint32(val) != 0, int(int32(ne.Uint32(val[4:])))
		s.o.linger = -1
		if on {
			s.o.linger = max(sec, 0)
		}
		return s.setConn(func(c *tcp.Conn) error { return c.SetLinger(s.o.linger) })
	}
	v, e := getInt(val)
	if e != 0 {
		return e
	}
	switch level {
	case solSocket:
		switch name {
		case soReuseAddr:
			s.bind.ReuseAddr = v != 0
		case soReusePort:
			s.bind.ReusePort = v != 0
		case soSndBuf, soRcvBuf:
			if name == soSndBuf {
				s.o.sndbuf = v
			} else {
				s.o.rcvbuf = v
			}
			// Linux doubles the value for its bookkeeping overhead and reports the
			// doubled size; berth's buffers hold data only, so they get the value.
			snd, rcv := 0, 0
			if name == soSndBuf {
				snd = max(v, 1)
			} else {
				rcv = max(v, 1)
			}
			return s.setConn(func(c *tcp.Conn) error { return c.SetBuffers(snd, rcv) })
		case soKeepAlive:
			s.o.keepalive = v != 0
			return s.setKeepalive(h)
		case soRcvLowat:
		case soZerocopy:
			// Accepted, and MSG_ZEROCOPY sends copy as any other: berth has no page
			// pinning, and the error-queue completions are not emulated (the zerocopy
			// scripts stay out of scope).
		default:
			return syscall.ENOPROTOOPT
		}
	case solTCP:
		switch name {
		case tcpNodelay:
			s.o.nodelay = v != 0
			return s.setConn(func(c *tcp.Conn) error { return c.SetNoDelay(v != 0) })
		case tcpKeepIdle, tcpKeepIntvl:
			if v < 1 || v > 32767 {
				return syscall.EINVAL
			}
			if name == tcpKeepIdle {
				s.o.keepIdle = time.Duration(v) * time.Second
			} else {
				s.o.keepIntvl = time.Duration(v) * time.Second
			}
			return s.setKeepalive(h)
		case tcpKeepCnt:
			if v < 1 || v > 127 {
				return syscall.EINVAL
			}
			s.o.keepCnt = v
			return s.setKeepalive(h)
		case tcpFastOpen:
			if v < 0 {
				return syscall.EINVAL
			}
			s.o.fastOpen = v
			if s.ln != nil {
				s.ln.SetFastOpen(v)
			}
		case tcpCork:
			s.o.cork = v != 0
			return s.setConn(func(c *tcp.Conn) error { return c.SetCork(v != 0) })
		case tcpUserTmo:
			if v < 0 {
				return syscall.EINVAL
			}
			s.o.userTimeout = time.Duration(v) * time.Millisecond
			return s.setConn(func(c *tcp.Conn) error { return c.SetUserTimeout(s.o.userTimeout) })
		case tcpInq:
			s.o.inq = v != 0
		case tcpMaxseg:
			if v < 88 || v > 32767 {
				return syscall.EINVAL
			}
			s.o.maxSeg = v
			if s.ln != nil {
				return errno(s.ln.SetMaxSeg(v))
			}
			return s.setConn(func(c *tcp.Conn) error { return c.SetMaxSeg(v) })
		case tcpSynCnt:
			if v < 1 || v > 127 {
				return syscall.EINVAL
			}
			s.o.synCnt = v
			return s.setConn(func(c *tcp.Conn) error { return c.SetSynRetries(v) })
		case tcpFOConnect:
			if s.opened || s.ln != nil {
				return syscall.EISCONN
			}
			if !h.fastOpenClient() {
				return syscall.EOPNOTSUPP
			}
			s.o.foConnect = v != 0
		case tcpNotSentLowat:
			// Linux keeps the value as a u32: a negative int is a very high mark.
			s.o.notSentLowat = v
			n := v
			if n < 0 {
				n = 1<<31 - 1
			}
			return s.setConn(func(c *tcp.Conn) error { return c.SetNotSentLowat(n) })
		case tcpQuickAck:
		default:
			return syscall.ENOPROTOOPT
		}
	case solIP:
		if name != ipFreebind {
			return syscall.ENOPROTOOPT
		}
		// IP_FREEBIND: binding to an address that is not (yet) local. Accepted; berth's
		// bind checks the address at listen/connect time as it is.
	case solIPv6:
		if name != ipv6V6Only {
			return syscall.ENOPROTOOPT
		}
		s.bind.V6Only = v != 0
	default:
		return syscall.ENOPROTOOPT
	}
	return 0
}

// setConn applies an option to the socket's connection, if it has one. s.mu is held.
func (s *socket) setConn(f func(*tcp.Conn) error) syscall.Errno {
	if s.conn == nil {
		return 0
	}
	return errno(f(s.conn))
}

func (s *socket) setKeepalive(h *Host) syscall.Errno {
	idle, intvl, cnt := keepDefaults(h.cfg.Sysctl)
	if s.o.keepIdle == 0 {
		s.o.keepIdle = idle
	}
	if s.o.keepIntvl == 0 {
		s.o.keepIntvl = intvl
	}
	if s.o.keepCnt == 0 {
		s.o.keepCnt = cnt
	}
	k := tcp.KeepAliveConfig{Enable: s.o.keepalive, Idle: s.o.keepIdle, Interval: s.o.keepIntvl, Count: s.o.keepCnt}
	return s.setConn(func(c *tcp.Conn) error { return c.SetKeepAliveConfig(k) })
}

// GetSockopt is getsockopt(2); it returns the option's length.
func (h *Host) GetSockopt(fd, level, name int, buf []byte) (int, syscall.Errno) {
	h.enter()
	defer h.leave()
	s, e := h.sock(fd)
	if e != 0 {
		return 0, e
	}
	s.mu.Lock()
	c, ln, opened, o := s.conn, s.ln, s.opened, s.o
	bo := s.bind
	family := s.family
	s.mu.Unlock()
	b2i := func(b bool) int {
		if b {
			return 1
		}
		return 0
	}
	switch level {
	case solSocket:
		switch name {
		case soError:
			if c == nil || !opened {
				return putInt(buf, 0), 0
			}
			return putInt(buf, int(errno(c.TakeError()))), 0
		case soReuseAddr:
			return putInt(buf, b2i(bo.ReuseAddr)), 0
		case soReusePort:
			return putInt(buf, b2i(bo.ReusePort)), 0
		case soKeepAlive:
			return putInt(buf, b2i(o.keepalive)), 0
		case soType:
			return putInt(buf, syscall.SOCK_STREAM), 0
		case soProtocol:
			return putInt(buf, syscall.IPPROTO_TCP), 0
		case soDomain:
			return putInt(buf, family), 0
		case soAcceptCon:
			return putInt(buf, b2i(ln != nil)), 0
		case soSndBuf:
			return putInt(buf, 2*max(o.sndbuf, 0)), 0
		case soRcvBuf:
			return putInt(buf, 2*max(o.rcvbuf, 0)), 0
		case soMeminfo: // for packetdrill's code events, which read it; berth keeps none
			clear(buf)
			return len(buf), 0
		}
	case solTCP:
		switch name {
		case tcpNodelay:
			return putInt(buf, b2i(o.nodelay)), 0
		case tcpInq:
			return putInt(buf, b2i(o.inq)), 0
		case tcpUserTmo:
			return putInt(buf, int(o.userTimeout/time.Millisecond)), 0
		case tcpCork:
			return putInt(buf, b2i(o.cork)), 0
		case tcpNotSentLowat:
			return putInt(buf, o.notSentLowat), 0
		case tcpKeepIdle:
			return putInt(buf, int(o.keepIdle/time.Second)), 0
		case tcpKeepIntvl:
			return putInt(buf, int(o.keepIntvl/time.Second)), 0
		case tcpKeepCnt:
			return putInt(buf, o.keepCnt), 0
		case tcpMaxseg:
			if c == nil || !opened {
				if o.maxSeg > 0 {
					return putInt(buf, o.maxSeg), 0
				}
				return putInt(buf, 536), 0
			}
			return putInt(buf, c.Info().MSS), 0
		case tcpCongest:
			name := "cubic"
			if c != nil {
				name = c.CongestionControl()
			}
			return copy(buf, append([]byte(name), make([]byte, 16-len(name))...)), 0
		case tcpCCInfo: // likewise: no algorithm-specific state is exposed
			clear(buf)
			return len(buf), 0
		case tcpInfo:
			// Fields berth does not keep read as zero, to whatever length the caller
			// asks (packetdrill's struct is longer than tcpInfoLen).
			clear(buf)
			if c == nil {
				return len(buf), 0
			}
			copy(buf, tcpInfoBytes(c))
			return len(buf), 0
		}
	}
	return 0, syscall.ENOPROTOOPT
}

// tcpInfoLen is the size of Linux's struct tcp_info up to tcpi_rcv_wnd.
const tcpInfoLen = 236

// Linux's tcp_info states (TCP_ESTABLISHED = 1, ...) by berth state name.
var linuxStates = map[string]uint8{
	"ESTABLISHED": 1, "SYN-SENT": 2, "SYN-RECEIVED": 3, "FIN-WAIT-1": 4, "FIN-WAIT-2": 5,
	"TIME-WAIT": 6, "CLOSED": 7, "CLOSE-WAIT": 8, "LAST-ACK": 9, "LISTEN": 10, "CLOSING": 11,
}

// tcpInfoBytes lays out struct tcp_info from the connection's Info.
func tcpInfoBytes(c *tcp.Conn) []byte {
	si := c.Info()
	b := make([]byte, tcpInfoLen)
	b[0] = linuxStates[si.State.String()]
	b[1] = uint8(si.CAState)
	b[4] = uint8(si.Backoff)
	var opts uint8
	if si.Timestamps {
		opts |= 1
	}
	if si.SACK {
		opts |= 2
	}
	if si.SynData {
		opts |= 32 // TCPI_OPT_SYN_DATA
	}
	if si.ECN {
		opts |= 8 // TCPI_OPT_ECN
	}
	if si.SndWScale >= 0 {
		opts |= 4
		b[6] = uint8(si.SndWScale&0xf) | uint8(si.RcvWScale&0xf)<<4
	}
	b[5] = opts
	u32 := func(off int, v int) { ne.PutUint32(b[off:], uint32(v)) }
	u64 := func(off int, v uint64) { ne.PutUint64(b[off:], v) }
	us := func(d time.Duration) int { return int(d / time.Microsecond) }
	ms := func(d time.Duration) int { return int(d / time.Millisecond) }
	mss := max(si.MSS, 1)
	u32(8, us(si.RTO))
	u32(16, si.MSS)
	u32(20, si.RcvMSS)
	u32(24, (si.SendQ+mss-1)/mss)
	u32(28, (si.SACKed+mss-1)/mss)
	u32(32, (si.Lost+mss-1)/mss)
	u32(36, (si.RetransOut+mss-1)/mss) // tcpi_retrans: retransmitted, not yet acknowledged
	// tcpi_last_data_sent, _last_ack_sent (Linux does not keep it either),
	// _last_data_recv, _last_ack_recv: milliseconds.
	u32(44, ms(si.LastDataSent))
	u32(52, ms(si.LastDataRecv))
	u32(56, ms(si.LastAckRecv))
	u32(68, us(si.RTT))
	u32(72, us(si.RTTVar))
	ss := si.SSThresh / mss
	if si.SSThresh >= 1<<30 {
		ss = 0x7fffffff
	}
	u32(76, ss)
	u32(80, si.CWnd/mss)
	u32(84, si.MSS)
	u32(88, si.ReorderingSegs)
	u32(100, int(si.Retrans))
	u32(148, us(si.MinRTT))
	// tcpi_busy_time, _rwnd_limited, _sndbuf_limited (microseconds), tcpi_delivered.
	u64(168, uint64(us(si.BusyTime)))
	u64(176, uint64(us(si.RwndLimited)))
	u64(184, uint64(us(si.SndbufLimited)))
	u32(192, int(si.Delivered))
	u32(228, si.SndWnd)
	u32(232, si.RcvWnd)
	return b
}
