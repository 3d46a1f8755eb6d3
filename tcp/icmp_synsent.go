package tcp

import "github.com/berthnet/berth/wire"

// icmpSynSentMTU handles a "fragmentation needed" (ICMPv6 packet too big) quoting our SYN,
// mtu being the path MTU the network layer took from it (floored there), as Linux's
// tcp_v4_mtu_reduced / tcp_v6_mtu_reduced in SYN-SENT (RFC 1191 §6.1 / RFC 8201 §5.2:
// TCP learns of the smaller path MTU even before the connection is established):
//
//   - the MSS our SYN announces comes down to what the path MTU allows (Linux's
//     tcp_advertise_mss takes the route's advmss, the MTU less the IP and TCP headers),
//     and so does the MSS the SYN-ACK's is taken against (negotiate: the smaller wins);
//   - a SYN that carried data (Fast Open, RFC 7413) was what did not fit: it goes again
//     at once, as tcp_simple_retransmit marks a SYN with data lost whole, without the data
//     and without the Fast Open option (a retransmitted SYN, RFC 7413 §4.1.3), the data
//     following the handshake (synAckFastOpen: the SYN-ACK acknowledges none of it).
//     A bare SYN fits any path; the next one, at its timeout, announces the lower MSS
//     (tcp/fastopen/client/syn-data-icmp-unreach-frag-needed*.pkt).
//
// The quoted sequence number was checked (our ISS). c.mu is held.
func (c *Conn) icmpSynSentMTU(mtu int) {
	if mtu <= 0 {
		return
	}
	ipHdr := 20
	if c.remote.Addr().Is6() && !c.remote.Addr().Is4In6() {
		ipHdr = 40
	}
	m := max(mtu-ipHdr-wire.TCPMinHeaderLen, 64)
	if m >= c.advMSS {
		return // no lower than the path the SYN was built for (Linux: icsk_pmtu_cookie > mtu)
	}
	c.advMSS, c.mss = m, m
	c.p.Stats.PMTUUpdates.Add(1)
	if !c.synData {
		return
	}
	// Not one of the SYN retries tcp_syn_retries counts (Linux counts timeouts): retries
	// is raised only while the SYN is built, so that it carries neither data nor the Fast
	// Open option, asks for no ECN (as a retransmitted SYN) and starts no RTT sample
	// (Karn's rule: the SYN-ACK may answer either SYN). The timer restarts from now, as
	// tcp_xmit_retransmit_queue re-arms it for the head of the queue.
	c.rttOn = false
	c.retrans++
	c.p.Stats.RetransSegs.Add(1)
	c.retries++
	c.sendSYN()
	c.retries--
	c.arm(timerRetransmit, c.rto)
}
