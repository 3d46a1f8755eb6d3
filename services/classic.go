package services

import (
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"syscall"
	"time"
)

// EchoConn is the TCP echo service (RFC 862): it sends back everything it receives until
// the client closes its side, then closes the connection.
func EchoConn(c net.Conn) error {
	defer c.Close()
	_, err := io.Copy(c, c)
	return err
}

// DiscardConn is the TCP discard service (RFC 863): it reads and throws away everything
// until the client closes its side.
func DiscardConn(c net.Conn) error {
	defer c.Close()
	_, err := io.Copy(io.Discard, c)
	return err
}

// DaytimeConn is the TCP daytime service (RFC 867): it sends DaytimeText(now) and closes
// the connection, ignoring any input.
func DaytimeConn(c net.Conn, now time.Time) error {
	defer c.Close()
	_, err := io.WriteString(c, DaytimeText(now))
	return err
}

// DaytimeText is the daytime reply for t. RFC 867 leaves the syntax open and suggests
// "Weekday, Month Day, Year Time-Zone"; this is that, ending in CR LF:
//
//	Monday, February 22, 1982 17:37:43-PST\r\n
func DaytimeText(t time.Time) string {
	return t.Format("Monday, January 2, 2006 15:04:05-MST") + "\r\n"
}

const (
	chargenRing     = 95 // the printing ASCII characters, ' ' to '~'
	chargenWidth    = 72
	chargenLineSize = chargenWidth + 2 // with CR LF
)

// ChargenPeriod is the length in bytes after which the chargen stream repeats: 95 lines
// of 74 bytes.
const ChargenPeriod = chargenRing * chargenLineSize

// chargenCycle is one period of RFC 864's "popular pattern" — the 95 printing ASCII
// characters as a ring in code order (character 0 is the space), 72 of them per line,
// line N starting at character N mod 95, each line ending in CR LF — followed by a copy
// of itself, so that any window of up to ChargenPeriod bytes is a single slice.
var chargenCycle = func() []byte {
	b := make([]byte, 0, 2*ChargenPeriod)
	for i := range chargenRing {
		// The stream starts with line 1, "!\"#...h": the first line of RFC 864's example.
		n := (i + 1) % chargenRing
		for j := range chargenWidth {
			b = append(b, byte(' '+(n+j)%chargenRing))
		}
		b = append(b, '\r', '\n')
	}
	return append(b, b...)
}()

// ChargenReader reads the endless RFC 864 character stream, starting at the first line of
// the RFC's example. Its zero value is ready to use.
type ChargenReader struct{ off int }

// Read fills p with the next bytes of the stream; it never fails.
func (r *ChargenReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		k := copy(p[n:], chargenCycle[r.off:r.off+ChargenPeriod])
		n += k
		r.off = (r.off + k) % ChargenPeriod
	}
	return n, nil
}

// ChargenConn is the TCP character generator (RFC 864): it sends the chargen stream and
// throws away what it receives, until the client closes its side (or aborts) — then it
// closes the connection.
func ChargenConn(c net.Conn) error {
	defer c.Close()
	readDone := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, c)
		// RFC 864: "This continues until the calling user terminates the connection."
		// Closing unblocks the writer below.
		c.Close()
		readDone <- err
	}()
	var err error
	off := 0
	for {
		var n int
		n, err = c.Write(chargenCycle[off : off+ChargenPeriod])
		if err != nil {
			break
		}
		off = (off + n) % ChargenPeriod
	}
	c.Close()
	rerr := <-readDone
	// RFC 864: "The service should be prepared for either the carfull close or the rude
	// abort": EOF (rerr == nil), a reset or a broken pipe are the normal end.
	if rerr == nil || clientGone(err) || clientGone(rerr) {
		return nil
	}
	return err
}

// clientGone reports whether err means the peer went away or the conn was closed here.
func clientGone(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, io.EOF)
}

// ChargenMaxDatagram is the largest UDP chargen answer: RFC 864 says "a random number
// (between 0 and 512) of characters".
const ChargenMaxDatagram = 512

// chargenDatagram returns the answer to one UDP chargen request: the first 0 to 512
// characters of the stream, the length drawn from r. RFC 864: there is no continuity
// between datagrams, so each starts at the beginning.
func chargenDatagram(r *rand.Rand) []byte {
	return chargenCycle[:r.IntN(ChargenMaxDatagram+1)]
}
