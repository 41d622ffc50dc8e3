package main

import (
	"net"
	"net/netip"
	"os"
	"os/exec"
	"testing"
	"time"
)

// Ensure -sources N gives clientIP and the N-1 addresses after it, and the
// generator's dial spreads its connections over them in turn, each seeing
// the address it dialled from.
func TestSourcesSpreadDials(t *testing.T) {
	got := sourceAddrs(3)
	if len(got) != 3 || got[0].String() != clientIP || got[1].String() != "198.51.100.11" || got[2].String() != "198.51.100.12" {
		t.Fatalf("sourceAddrs(3) = %v", got)
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	old := srcs
	defer func() { srcs = old }()
	srcs = sourceAddrs(1)[:0]
	for _, a := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"} { // loopback: no configuration
		srcs = append(srcs, netip.MustParseAddr(a))
	}
	seen := map[string]int{}
	for range 6 {
		c, src, err := dial(ln.Addr().String(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if got := c.LocalAddr().(*net.TCPAddr).AddrPort().Addr(); got != src {
			t.Errorf("dial said %s, the socket is bound to %s", src, got)
		}
		seen[src.String()]++
		c.Close()
	}
	if len(seen) != 3 || seen["127.0.0.2"] != 2 || seen["127.0.0.3"] != 2 || seen["127.0.0.4"] != 2 {
		t.Errorf("6 dials came from %v, want 127.0.0.2-4 twice each", seen)
	}
}

// Ensure treeCPU counts a process's children: a child that burns CPU
// raises the parent's tree total, not the parent's own.
func TestTreeCPUCountsChildren(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skipf("skipping: no sh: %v", err)
	}
	// The parent shell waits on a child shell that spins a bounded count.
	cmd := exec.Command(sh, "-c", `sh -c 'i=0; while [ $i -lt 3000000 ]; do i=$((i+1)); done' & wait`)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	var total time.Duration
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if total, err = treeCPU(cmd.Process.Pid); err != nil {
			t.Fatal(err)
		}
		if total >= 200*time.Millisecond {
			break
		}
	}
	own, err := treeCPU(os.Getpid())
	if err != nil || own <= 0 {
		t.Errorf("treeCPU(self) = %v, %v; want a positive time", own, err)
	}
	if total < 200*time.Millisecond {
		t.Errorf("treeCPU(parent of a spinning child) = %v, want at least 200ms", total)
	}
	if _, err := treeCPU(0); err == nil {
		t.Error("treeCPU(0) succeeded")
	}
}
