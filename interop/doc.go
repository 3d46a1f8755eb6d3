// Package interop holds kernel-interop tests and nothing else: a berth stack on a Linux
// TUN device, the Linux kernel on the other side inside a network namespace that the
// test creates (internal/netns) and removes again, with its devices and nftables rules,
// also when the test fails. The kernel's side is driven with ping, curl, ss, nft and Go's
// own net and net/http packages on a thread inside the namespace. The host is
// internal/netns/tunhost's; berth's side of its link can be impaired (link/impair) and
// recorded (link/pcap, read back with tshark) through tunhost.Config.WrapLink.
//
// What the tests check:
//
//   - TestPing: ping both ways, IPv4 and IPv6, also with payloads that need fragments;
//   - TestUDP, TestTCPRefused: UDP from berth to the kernel; a datagram to a closed
//     berth port makes the kernel's connected socket fail with ECONNREFUSED; a TCP
//     connect from the kernel to a closed berth port is refused at once (so berth's RST
//     acknowledged the SYN correctly, RFC 9293 §3.10.7.1);
//   - TestBulk, TestBulkImpaired, TestBulkLossy: HTTP transfers both ways, SHA-256
//     checked against services.FillPattern — curl in the namespace from berth's
//     GET /bytes/N, and berth from a net/http server on a kernel socket — on a clean path,
//     on a path with 2% nftables loss plus berth-side loss, 10 ms delay and reordering,
//     and on one with 5% loss, 25% reordering and 20 ms delay in each direction;
//   - TestTCPOptionsSeen, TestTCPOptionsNegotiated: the TCP options (mss, wscale, sack,
//     ts) the two sides negotiate in both directions, as berth's pcap shows them (tshark)
//     and as the kernel applies them (ss -ti and getsockopt TCP_INFO);
//   - TestPcapTshark: tshark reads berth's pcap of a session without errors;
//   - BenchmarkThroughputLoss2: berth's bulk send throughput against the kernel's own
//     (kernel to kernel over a veth pair) with 2% nftables loss at the receiver, medians
//     and their ratio (a benchmark: performance is measured, never asserted in a test).
//
// The echo, daytime and chargen services over TCP and UDP, and discard over TCP, are
// covered against a kernel client by cmd/berth's TestUp, and kernel-to-berth ping, UDP
// and TCP basics by internal/netns/tunhost's TestHost; this package adds what they lack.
//
// Loss: the kernel's nftables rule (`numgen random mod 100 < N drop`) sits on the input
// hook, so it drops what berth sends; a drop on the kernel's output would be reported to
// the kernel's TCP as a local transmit failure and requeued, not lost on the wire. Loss
// of what the kernel sends comes from berth's side of the link. The link's MTU is 1500.
//
// Transfer sizes: a plain run moves 256 MiB per bulk transfer (clean and impaired) and
// 64 MiB per throughput sample. The impaired transfers are slow by nature (loss and delay
// bound any TCP's rate), so give a plain run time: `go test -timeout 30m ./interop/`.
// Under the race detector (`go test -race ./...`, as CI runs it) berth is about ten times
// slower, so the bulk transfers shrink to 32 MiB, the impaired ones to 8 MiB and the
// throughput samples to 16 MiB, and the 0.7x ratio is logged, not asserted; the package
// then takes under a minute. The sizes are in race_test.go and norace_test.go.
//
// Every test needs root, the programs above and a kernel with TUN, network namespaces
// and nftables: outside CI they skip (internal/testenv), under CI=true they fail instead.
package interop
