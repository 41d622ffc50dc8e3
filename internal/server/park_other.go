//go:build !linux

package server

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// parkLot is Linux-only (epoll); elsewhere newParkLot fails and a line
// connection waits for its next line on its own goroutine.
type parkLot struct{}

func newParkLot(*sync.WaitGroup, *atomic.Int64, func(*conn)) (*parkLot, error) {
	return nil, errors.ErrUnsupported
}

func (*parkLot) park(*conn) bool   { return false }
func (*parkLot) unpark(*conn) bool { return false }
func (*parkLot) handBack(*conn)    {}
func (*parkLot) close()            {}

// readable is never called without a lot.
func readable(*conn, time.Time) bool { return true }
