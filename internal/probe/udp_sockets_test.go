package probe

import (
	"context"
	"net"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"time"
)

// TestRunUDPSocketFailureSendsNothing: when one of the -c sockets cannot
// be opened (here: out of file descriptors), RunUDP fails before any
// sender starts. It used to start the senders whose sockets had opened and
// return without waiting for them: they kept sending (and the result said
// 0 sent), goroutines nobody owned.
func TestRunUDPSocketFailureSendsNothing(t *testing.T) {
	sink, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("counting open files: %v", err)
	}
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Skipf("getrlimit: %v", err)
	}
	low := old
	low.Cur = uint64(len(fds) + 8) // room for a few sockets, not for 50
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Skipf("setrlimit: %v", err)
	}
	res, runErr := RunUDP(context.Background(), UDPConfig{
		Target: sink.LocalAddr().String(), Count: 3, Concurrency: 50, Interval: time.Millisecond, Wait: 50 * time.Millisecond,
	})
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatalf("restoring the file limit: %v", err)
	}
	if runErr == nil {
		t.Fatalf("50 sockets under a limit of %d: no error (sent %d)", low.Cur, res.Sent)
	}
	// Nothing may arrive at the sink: read for a while (no sender may
	// still be running after RunUDP returned).
	sink.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	buf := make([]byte, 2048)
	got := 0
	for {
		if _, _, err := sink.ReadFromUDPAddrPort(buf); err != nil {
			break
		}
		got++
	}
	if got != 0 || res.Sent != 0 {
		t.Errorf("RunUDP failed (%v) but %d datagrams arrived, result says %d sent", runErr, got, res.Sent)
	}
}
