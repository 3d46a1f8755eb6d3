module github.com/berthnet/berth/bench

go 1.26.3

replace github.com/berthnet/berth => ../

require gvisor.dev/gvisor v0.0.0-20260905035102-160fafc42237

require golang.org/x/net v0.62.0 // indirect

require (
	github.com/berthnet/berth v0.0.0-00010101000000-000000000000
	github.com/google/btree v1.1.2 // indirect
	golang.org/x/exp v0.0.0-20250711185948-6ae5c78190dc // indirect
	golang.org/x/sys v0.50.0
	golang.org/x/time v0.15.0 // indirect
)
