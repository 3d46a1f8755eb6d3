package tcp

// SetFastOpen sets tcp_fastopen's FastOpen* bits for the handshakes that start afterwards
// (Config.FastOpen is the initial value; 0 here is off): Linux reads the sysctl at each
// connect and SYN, and scripts change it between connections
// (tcp/fastopen/client/cookie-less-sendto.pkt: "sysctl -q net.ipv4.tcp_fastopen=1").
func (p *Protocol) SetFastOpen(mode int) { p.foMode.Store(int32(max(mode, 0))) }

func (p *Protocol) fastOpen() int { return int(p.foMode.Load()) }
