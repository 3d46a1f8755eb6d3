//go:build linux

package nsthread_test

import (
	"errors"
	"os"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/berthnet/berth/internal/netns"
	"github.com/berthnet/berth/internal/nsthread"
)

// nsInode is the inode of the namespace the calling thread is in.
func nsInode(t *testing.T) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// TestRun: f runs in the namespace named (its thread's ns/net is the namespace file's
// inode), a socket it makes answers there, and the caller's goroutine stays where it was.
func TestRun(t *testing.T) {
	ns := netns.New(t)
	path := "/run/netns/" + ns.Name
	var want unix.Stat_t
	if err := unix.Stat(path, &want); err != nil {
		t.Fatal(err)
	}
	before := nsInode(t)
	var inside uint64
	var fd int
	err := nsthread.Run(path, func() error {
		inside = nsInode(t)
		var err error
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if inside != want.Ino {
		t.Errorf("f ran in namespace %d, want %d", inside, want.Ino)
	}
	if inside == before {
		t.Errorf("f ran in the caller's namespace %d", before)
	}
	// The socket belongs to the namespace (SIOCGSKNS: a descriptor of its namespace).
	nsfd, err := unix.IoctlRetInt(fd, unix.SIOCGSKNS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(nsfd)
	var st unix.Stat_t
	if err := unix.Fstat(nsfd, &st); err != nil {
		t.Fatal(err)
	}
	if st.Ino != want.Ino {
		t.Errorf("the socket f made is in namespace %d, want %d", st.Ino, want.Ino)
	}
	if after := nsInode(t); after != before {
		t.Errorf("the caller's thread is in namespace %d after Run, was in %d", after, before)
	}
}

// TestRunErrors: f's error comes back as it is; a path that is no namespace file is an
// error before f runs, and f does not run.
func TestRunErrors(t *testing.T) {
	errF := errors.New("from f")
	if err := nsthread.Run("", func() error { return errF }); err != errF {
		t.Errorf("Run with no path: %v, want f's error", err)
	}
	ran := false
	err := nsthread.Run("/nonexistent/ns", func() error { ran = true; return nil })
	if !errors.Is(err, os.ErrNotExist) || ran {
		t.Errorf("Run of a missing file: %v (f ran: %v), want ErrNotExist and f not run", err, ran)
	}
	f, err := os.CreateTemp(t.TempDir(), "notns")
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	err = nsthread.Run(f.Name(), func() error { ran = true; return nil })
	if !errors.Is(err, syscall.EINVAL) || ran {
		t.Errorf("Run of a plain file: %v (f ran: %v), want EINVAL and f not run", err, ran)
	}
}
