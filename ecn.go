package berth

// WithECN sets TCP's Explicit Congestion Notification (RFC 3168), Linux's tcp_ecn
// (tcp.Config.ECN): tcp.ECNRequest requests it on connections the stack opens and accepts
// it on those it accepts; tcp.ECNAccept, the default, only accepts it; a negative mode
// turns it off. Give it after WithTCPConfig, which replaces the whole TCP configuration.
// The stack's TCP().SetECN changes it while running.
func WithECN(mode int) Option { return func(cfg *Config) { cfg.TCP.ECN = mode } }
