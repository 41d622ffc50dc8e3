//go:build !linux

package relay

import (
	"errors"
	"syscall"
)

// control fails for transparent sockets and marks: they are Linux-only.
func control(transparent, _ bool, mark int) func(network, address string, rc syscall.RawConn) error {
	return func(string, string, syscall.RawConn) error {
		if transparent || mark > 0 {
			return &sockoptError{"IP_TRANSPARENT/SO_MARK", errors.ErrUnsupported}
		}
		return nil
	}
}
