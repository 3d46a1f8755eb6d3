package ether

import "sync"

// freeList recycles buffers of type *T. Unlike sync.Pool it keeps what it is given (up to
// maxFree) across garbage collections and under the race detector, so the packet paths
// are allocation-free in every build, which TestHotPathsNoAllocs checks. What it keeps is
// bounded by max objects.
type freeList[T any] struct {
	mu   sync.Mutex
	free []*T
	max  int // most kept; 0: defaultMaxFree
}

const defaultMaxFree = 64

func (l *freeList[T]) get() *T {
	l.mu.Lock()
	if n := len(l.free); n > 0 {
		x := l.free[n-1]
		l.free[n-1] = nil
		l.free = l.free[:n-1]
		l.mu.Unlock()
		return x
	}
	l.mu.Unlock()
	return new(T)
}

func (l *freeList[T]) put(x *T) {
	l.mu.Lock()
	if m := l.max; len(l.free) < m || m == 0 && len(l.free) < defaultMaxFree {
		l.free = append(l.free, x)
	}
	l.mu.Unlock()
}
