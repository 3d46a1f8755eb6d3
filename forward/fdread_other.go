//go:build !linux

package forward

import "errors"

var errWouldBlock = errors.New("forward: would block")

// fdReader is Linux's; elsewhere copies block in the host socket's Read.
type fdReader struct {
	count interface{ Add(uint64) uint64 }
}

func newFDReader(any, bool) (*fdReader, error) { return nil, errors.ErrUnsupported }
func (*fdReader) Read([]byte) (int, error)     { return 0, errors.ErrUnsupported }
func (*fdReader) wait() error                  { return errors.ErrUnsupported }

// fdWriter is Linux's; elsewhere copies write through net.Conn.
type fdWriter struct{}

func newFDWriter(any) (*fdWriter, error)    { return nil, errors.ErrUnsupported }
func (*fdWriter) Write([]byte) (int, error) { return 0, errors.ErrUnsupported }
