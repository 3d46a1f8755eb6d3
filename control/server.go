package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// Source is what a control socket shows: a stack's sockets and counters. A Source may
// also be a Capturer (captures) and a PortForwarder (the forward op).
type Source interface {
	Sockets() []Socket   // the socket table, like ss
	Counters() []Counter // the counters, like nstat
}

// Capturer is a Source that can also record packets (FromStack with a Tap).
type Capturer interface {
	// Capture writes a pcap stream of the packets passing through the source's links to
	// w until count packets have been recorded (0: no limit), ctx is done, or writing to
	// w fails; it returns nil in the first two cases.
	Capture(ctx context.Context, w io.Writer, count int) error
}

// Server serves a Source on a unix socket.
type Server struct {
	path string
	src  Source
	ln   *net.UnixListener
	log  *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

// requestTimeout bounds reading a request and writing an answer: a client that stalls
// must not hold a goroutine for ever. Captures are not bounded.
const requestTimeout = 10 * time.Second

// Listen creates the control socket at path (and its directory, mode 0755) and serves src
// on it until Close. The socket is readable only by its owner and group (mode 0660): the
// socket table shows every connection of the host. A socket file left by a berth that
// no longer runs is replaced; one that answers is an error. log (nil: slog.Default())
// gets one line per failed request.
func Listen(path string, src Source, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.Default()
	}
	// sockaddr_un's sun_path is 108 bytes with the NUL.
	if len(path) > 107 {
		return nil, fmt.Errorf("control socket path %q is longer than 107 bytes: choose a shorter one", path)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := removeStale(path); err != nil {
		return nil, err
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	ln.SetUnlinkOnClose(true)
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{path: path, src: src, ln: ln, log: log, ctx: ctx, cancel: cancel}
	s.wg.Add(1)
	go s.accept()
	return s, nil
}

// removeStale removes a socket file at path that nothing serves any more.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("control socket: %s exists and is not a socket: remove it or choose another path", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("control socket: another berth is serving %s: stop it or choose another path", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("control socket: %w", err)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("control socket: removing the stale %s: %w", path, err)
	}
	return nil
}

// Serve is Listen, then serving until ctx is done; it returns after Close.
func Serve(ctx context.Context, path string, src Source, log *slog.Logger) error {
	s, err := Listen(path, src, log)
	if err != nil {
		return err
	}
	<-ctx.Done()
	return s.Close()
}

// Path is the socket's path.
func (s *Server) Path() string { return s.path }

// Close stops the server: it removes the socket, ends running captures and waits for
// every connection's goroutine.
func (s *Server) Close() error {
	var err error
	s.once.Do(func() {
		s.cancel()
		err = s.ln.Close()
		s.wg.Wait()
	})
	return err
}

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			if s.ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				s.log.Error("control socket: accept", "path", s.path, "err", err)
			}
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.handle(c)
		}()
	}
}

func (s *Server) handle(c *net.UnixConn) {
	defer c.Close()
	// Close the connection when the server stops, to end a capture or a stalled client.
	stop := context.AfterFunc(s.ctx, func() { c.Close() })
	defer stop()
	c.SetDeadline(time.Now().Add(requestTimeout))
	r := bufio.NewReaderSize(io.LimitReader(c, maxRequest), maxRequest)
	line, err := r.ReadBytes('\n')
	if len(line) >= maxRequest && line[len(line)-1] != '\n' {
		s.reply(c, Response{Error: fmt.Sprintf("request too long (more than %d bytes)", maxRequest)})
		return
	}
	if err != nil && !(errors.Is(err, io.EOF) && len(line) > 0) {
		if !errors.Is(err, io.EOF) {
			s.log.Debug("control socket: reading a request", "err", err)
		}
		return
	}
	var req Request
	if err := json.Unmarshal(line, &req); err != nil {
		s.reply(c, Response{Error: "malformed request: " + err.Error()})
		return
	}
	switch req.Op {
	case "sockets":
		s.reply(c, Response{OK: true, Sockets: s.src.Sockets()})
	case "counters":
		s.reply(c, Response{OK: true, Counters: s.src.Counters()})
	case "capture":
		s.capture(c, req)
	case "forward":
		s.forward(c, req)
	default:
		s.reply(c, Response{Error: fmt.Sprintf("unknown op %q (want sockets, counters, capture or forward)", req.Op)})
	}
}

func (s *Server) reply(c *net.UnixConn, resp Response) bool {
	b, err := json.Marshal(resp)
	if err == nil {
		_, err = c.Write(append(b, '\n'))
	}
	if err != nil {
		s.log.Debug("control socket: writing an answer", "err", err)
		return false
	}
	if !resp.OK {
		// Read what the client may still be sending before closing: closing a unix socket
		// with unread data resets the connection, and the client would lose the answer.
		c.CloseWrite()
		io.Copy(io.Discard, io.LimitReader(c, 1<<20))
	}
	return true
}

func (s *Server) capture(c *net.UnixConn, req Request) {
	cp, ok := s.src.(Capturer)
	if !ok {
		s.reply(c, Response{Error: "this berth cannot capture (it has no capture tap on its links)"})
		return
	}
	if req.Count < 0 {
		s.reply(c, Response{Error: fmt.Sprintf("negative count %d", req.Count)})
		return
	}
	if !s.reply(c, Response{OK: true}) {
		return
	}
	c.SetDeadline(time.Time{})
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	// The client stops a capture by closing the connection: a read returns then.
	go func() {
		io.Copy(io.Discard, c)
		cancel()
	}()
	if err := cp.Capture(ctx, c, req.Count); err != nil && ctx.Err() == nil {
		s.log.Info("control socket: capture ended", "err", err)
	}
	// Tell the client the stream is complete; the reader goroutine ends when it closes.
	c.CloseWrite()
	c.SetReadDeadline(time.Now().Add(requestTimeout))
	<-ctx.Done()
}
