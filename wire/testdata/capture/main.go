package main

import (
	"io"
	"net"
	"time"
)

func tcp(network, addr string) {
	ln, err := net.Listen(network, addr)
	if err != nil {
		panic(err)
	}
	go func() {
		c, _ := ln.Accept()
		io.Copy(c, c)
		c.Close()
	}()
	c, err := net.Dial(network, ln.Addr().String())
	if err != nil {
		panic(err)
	}
	c.Write([]byte("hello berth"))
	buf := make([]byte, 64)
	io.ReadFull(c, buf[:11])
	c.Close()
	time.Sleep(100 * time.Millisecond)
	ln.Close()
}

func udp(network, laddr, closed string) {
	pc, err := net.ListenPacket(network, laddr)
	if err != nil {
		panic(err)
	}
	c, _ := net.Dial(network, pc.LocalAddr().String())
	c.Write([]byte("udp payload"))
	buf := make([]byte, 64)
	pc.ReadFrom(buf)
	c.Close()
	pc.Close()
	d, _ := net.Dial(network, closed)
	d.Write([]byte("nobody home"))
	time.Sleep(100 * time.Millisecond)
	d.Close()
}

func main() {
	tcp("tcp4", "127.0.0.1:0")
	tcp("tcp6", "[::1]:0")
	udp("udp4", "127.0.0.1:0", "127.0.0.1:9")
	udp("udp6", "[::1]:0", "[::1]:9")
}
