package tcp

import "syscall"

// icmpSynReceived handles an ICMP error quoting seq for a connection in SYN-RECEIVED
// (c.mu held), as Linux's tcp_v4_err and tcp_req_err (RFC 5927 §4.1: only errors that
// quote a sequence number we sent are believed).
//
//   - A passive open's half-open connection (Linux's request socket) is dropped
//     silently, back to LISTEN, when the error quotes our SYN-ACK (seq = ISS) and is one
//     Linux treats as fatal for a request: net or host unreachable, time exceeded or
//     parameter problem for IPv4; the fatal codes of ICMPv6 (administratively prohibited,
//     port unreachable, parameter problem). RFC 1122 §4.2.3.9 calls unreachable soft
//     for a connection, but a request holds nothing worth waiting for: the client's
//     next SYN makes a new one. A later ACK then finds no connection and is answered
//     with RST (tcp/fastopen/server/icmp-baseline.pkt).
//   - A Fast Open child not yet accepted fails with the error: it goes to CLOSED and
//     stays in the accept queue, its SYN's data readable, then the error reported
//     (tcp/fastopen/server/icmp-before-accept.pkt). Once accepted it is treated as a
//     connected socket: the error is soft.
//   - A simultaneous open's SYN-RECEIVED fails as SYN-SENT does.
//
// EMSGSIZE (fragmentation needed) never aborts an opening connection.
func (c *Conn) icmpSynReceived(seq uint32, errno syscall.Errno) {
	if errno == syscall.EMSGSIZE {
		return
	}
	switch {
	case c.tfoChild:
		if seqLT(seq, c.iss) || seqGT(seq, c.sndNxt) {
			return
		}
		if c.listener == nil {
			c.softErr = errno // accepted: a connected socket's soft error
			return
		}
		c.listener = nil // it stays in the accept queue, closed (as on a RST: reset)
		c.fail(errno)
	case c.active:
		if seqLT(seq, c.iss) || seqGT(seq, c.sndNxt) {
			return
		}
		c.fail(errno)
	default:
		if seq != c.iss || !requestFatal(c.remote.Addr().Is4() || c.remote.Addr().Is4In6(), errno) {
			return
		}
		c.p.Stats.ListenDrops.Add(1)
		c.finish(nil)
	}
}

// requestFatal reports whether an ICMP error (as the errno the network layer mapped it
// to) drops a half-open passive connection, as the errors Linux passes to tcp_req_err as
// fatal: for IPv4 destination unreachable net or host (ENETUNREACH, EHOSTUNREACH), time
// exceeded (ETIMEDOUT) and parameter problem (EPROTO); for IPv6 icmpv6_err_convert's
// fatal ones (EACCES: administratively prohibited, ECONNREFUSED: port unreachable,
// EPROTO: parameter problem).
func requestFatal(v4 bool, errno syscall.Errno) bool {
	if v4 {
		return errno == syscall.ENETUNREACH || errno == syscall.EHOSTUNREACH || errno == syscall.ETIMEDOUT || errno == syscall.EPROTO
	}
	return errno == syscall.EACCES || errno == syscall.ECONNREFUSED || errno == syscall.EPROTO
}
