package control

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"
)

// Client talks to the control socket at Path.
type Client struct {
	Path string // path of the control socket (a Unix socket)
}

// dial connects to the server; the errors say what to do.
func (c *Client) dial(ctx context.Context) (*net.UnixConn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.Path)
	if err != nil {
		switch {
		case errors.Is(err, os.ErrNotExist), errors.Is(err, syscall.ECONNREFUSED):
			return nil, fmt.Errorf("%w at %s", ErrNotRunning, c.Path)
		case errors.Is(err, os.ErrPermission):
			return nil, fmt.Errorf("cannot open the control socket %s: permission denied (run as the user who started berth up, or with sudo)", c.Path)
		}
		return nil, fmt.Errorf("control socket %s: %w", c.Path, err)
	}
	return conn.(*net.UnixConn), nil
}

// do sends req and reads the answer line; for a capture, the stream follows on r.
func (c *Client) do(ctx context.Context, req Request) (*Response, *net.UnixConn, *bufio.Reader, error) {
	conn, err := c.dial(ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	b, _ := json.Marshal(req)
	if _, err := conn.Write(append(b, '\n')); err != nil {
		conn.Close()
		return nil, nil, nil, c.ioErr(ctx, err)
	}
	r := bufio.NewReader(conn)
	line, err := r.ReadBytes('\n')
	if err != nil {
		conn.Close()
		if errors.Is(err, io.EOF) {
			return nil, nil, nil, fmt.Errorf("control socket %s: the server closed the connection without answering", c.Path)
		}
		return nil, nil, nil, c.ioErr(ctx, err)
	}
	var resp Response
	if err := json.Unmarshal(line, &resp); err != nil {
		conn.Close()
		return nil, nil, nil, fmt.Errorf("control socket %s: malformed answer: %v", c.Path, err)
	}
	if !resp.OK {
		conn.Close()
		return nil, nil, nil, fmt.Errorf("berth at %s: %s", c.Path, resp.Error)
	}
	return &resp, conn, r, nil
}

func (c *Client) ioErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fmt.Errorf("control socket %s: %w", c.Path, err)
}

// Sockets returns the socket table.
func (c *Client) Sockets(ctx context.Context) ([]Socket, error) {
	resp, conn, _, err := c.do(ctx, Request{Op: "sockets"})
	if err != nil {
		return nil, err
	}
	conn.Close()
	return resp.Sockets, nil
}

// Counters returns the counters, in the server's order.
func (c *Client) Counters(ctx context.Context) ([]Counter, error) {
	resp, conn, _, err := c.do(ctx, Request{Op: "counters"})
	if err != nil {
		return nil, err
	}
	conn.Close()
	return resp.Counters, nil
}

// Capture starts a capture of count packets (0: until ctx is done) and copies the pcap
// stream to w, whole records only. It returns the number of packets written; a capture
// ended by ctx is not an error. started, if not nil, is called once the server has
// accepted the capture.
func (c *Client) Capture(ctx context.Context, w io.Writer, count int, started func()) (int, error) {
	if count < 0 {
		return 0, fmt.Errorf("negative count %d", count)
	}
	_, conn, r, err := c.do(ctx, Request{Op: "capture", Count: count})
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	if started != nil {
		started()
	}
	// Stop reading when ctx is done; the server sees the connection close.
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	n, err := copyRecords(w, r)
	if err != nil && ctx.Err() != nil {
		err = nil
	}
	if err != nil {
		return n, fmt.Errorf("capture from %s: %w", c.Path, err)
	}
	return n, nil
}

// copyRecords copies a pcap stream from r to w a whole record at a time, so that a
// capture cut short is still a valid file; it returns the number of records.
func copyRecords(w io.Writer, r io.Reader) (int, error) {
	var hdr [24]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		if errors.Is(err, io.EOF) {
			return 0, errors.New("the server sent no capture")
		}
		return 0, err
	}
	var order binary.ByteOrder
	switch binary.LittleEndian.Uint32(hdr[:]) {
	case 0xa1b2c3d4, 0xa1b23c4d:
		order = binary.LittleEndian
	case 0xd4c3b2a1, 0x4d3cb2a1:
		order = binary.BigEndian
	default:
		return 0, errors.New("the server sent something that is not a pcap stream")
	}
	if _, err := w.Write(hdr[:]); err != nil {
		return 0, err
	}
	n := 0
	buf := make([]byte, 16+65536)
	for {
		if _, err := io.ReadFull(r, buf[:16]); err != nil {
			if errors.Is(err, io.EOF) {
				return n, nil
			}
			return n, err
		}
		incl := int(order.Uint32(buf[8:]))
		if incl > 65536 {
			return n, fmt.Errorf("malformed capture record (%d bytes)", incl)
		}
		if _, err := io.ReadFull(r, buf[16:16+incl]); err != nil {
			return n, err
		}
		if _, err := w.Write(buf[:16+incl]); err != nil {
			return n, err
		}
		n++
	}
}
