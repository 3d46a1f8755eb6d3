module github.com/berthnet/berth/conformance

go 1.26.3

replace github.com/berthnet/berth => ../

require github.com/berthnet/berth v0.0.0-00010101000000-000000000000

require golang.org/x/net v0.62.0 // indirect
