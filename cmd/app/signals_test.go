package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// waitLog polls the process's stderr for want, failing after 60 s or when
// the process has exited without writing it.
func waitLog(t *testing.T, cmd *exec.Cmd, stderr *syncBuffer, want string) {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); !strings.Contains(stderr.String(), want); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) || exited(cmd.Process.Pid) {
			t.Fatalf("no %q in the log (exited: %v):\n%s", want, exited(cmd.Process.Pid), stderr.String())
		}
	}
}

// waitExit waits for the process and fails unless it exited with status 0.
func waitExit(t *testing.T, cmd *exec.Cmd, stderr *syncBuffer) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit: %v (%v); want status 0\nstderr:\n%s", err, cmd.ProcessState, stderr.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("no exit within 60 s\nstderr:\n%s", stderr.String())
	}
}

// Ensure a SIGHUP during the drain neither kills the app nor costs an
// event: open connections, SIGTERM, SIGHUPs while they drain, then every
// connection finishes, gets its answers, and has its one event; exit 0.
// (The old app died of the SIGHUP, status 129, with no event written: the
// reload goroutine had returned and its signal.Stop restored SIGHUP's
// default action.)
func TestSIGHUPDuringDrain(t *testing.T) {
	cmd, addr, admin, stdout, stderr := startBinary(t, "--drain-timeout", "60s", "--first-bytes-timeout", "60s", "--idle-timeout", "60s")
	type client struct {
		net.Conn
		br *bufio.Reader
	}
	const n = 4
	clients := make([]client, n)
	for i := range clients {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(60 * time.Second))
		clients[i] = client{c, bufio.NewReader(c)}
		fmt.Fprintf(c, "hello %d\n", i)
		for range 2 { // report, greeting
			if _, err := clients[i].br.ReadString('\n'); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// The drain has begun when /readyz says so (admin stays up until the
	// events are flushed).
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		resp, err := http.Get("http://" + admin + "/readyz")
		if err != nil {
			t.Fatalf("/readyz during the drain: %v\n%s", err, stderr.String())
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusServiceUnavailable {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz still %d 60 s after SIGTERM", resp.StatusCode)
		}
	}
	for i := range 3 {
		if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatalf("SIGHUP %d: %v", i, err)
		}
		// A round trip on every connection: the app is alive and serving.
		for j, c := range clients {
			fmt.Fprintf(c, "after hup %d\n", i)
			if l, err := c.br.ReadString('\n'); err != nil || l != fmt.Sprintf("after hup %d\n", i) {
				t.Fatalf("client %d after SIGHUP %d: %q %v\nstderr:\n%s", j, i, l, err, stderr.String())
			}
		}
	}
	waitLog(t, cmd, stderr, "SIGHUP during the drain: ignored")
	for i, c := range clients {
		fmt.Fprintf(c, "quit\n")
		if b, err := io.ReadAll(c.br); err != nil || len(b) != 0 {
			t.Errorf("client %d: after quit %q %v", i, b, err)
		}
	}
	waitExit(t, cmd, stderr)
	evs := parseEvents(t, stdout.String())
	ports := map[uint16]int{}
	for _, ev := range evs {
		ports[ev.Source.Port]++
	}
	if len(evs) != n {
		t.Errorf("%d events; want %d (one per connection)", len(evs), n)
	}
	for i, c := range clients {
		if p := addrPortOf(t, c.LocalAddr()).Port(); ports[p] != 1 {
			t.Errorf("client %d (port %d): %d events; want 1", i, p, ports[p])
		}
	}
}

// waitOpened waits until the app has path open (a link in /proc/PID/fd),
// failing after 60 s or when the process has exited.
func waitOpened(t *testing.T, cmd *exec.Cmd, path string, stderr *syncBuffer) {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", cmd.Process.Pid)
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		fds, _ := os.ReadDir(dir)
		for _, fd := range fds {
			if target, err := os.Readlink(filepath.Join(dir, fd.Name())); err == nil && target == path {
				return
			}
		}
		if time.Now().After(deadline) || exited(cmd.Process.Pid) {
			t.Fatalf("the app never opened %s (exited: %v)\nstderr:\n%s", path, exited(cmd.Process.Pid), stderr.String())
		}
	}
}

// startWithFIFOPolicy starts the app with --policy a FIFO that the test
// holds open for writing (w): policy.Load does not block on a FIFO with no
// writer (it reads as empty), so the writer is there first, and the app
// stays in start-up, reading the policy, until the test writes and closes
// w.
func startWithFIFOPolicy(t *testing.T) (cmd *exec.Cmd, fifo string, stderr *syncBuffer, w *os.File) {
	t.Helper()
	fifo = filepath.Join(t.TempDir(), "policy.yaml")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	// O_RDWR: an open for writing alone would block until a reader comes.
	w, err := os.OpenFile(fifo, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	cmd = exec.Command(appBinary(t), "--listen", "127.0.0.1:0", "--admin", "", "--log-format", "json", "--policy", fifo)
	stderr = &syncBuffer{}
	cmd.Stdout, cmd.Stderr = io.Discard, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd, fifo, stderr, w
}

// Ensure SIGHUPs that arrive while the app starts (here: while it reads
// --policy, a FIFO that holds it in policy.Load) do not kill it, and are
// applied once it serves: the policy is read again. The old app died of
// the first one (status 129): nothing handled SIGHUP before the reload
// goroutine started.
func TestSIGHUPWhileStarting(t *testing.T) {
	const rules = "default: {decision: serve, region: us-east-2}\n"
	cmd, fifo, stderr, w := startWithFIFOPolicy(t)
	// The app is in main, blocked reading the policy: main's first line
	// ran long ago.
	waitOpened(t, cmd, fifo, stderr)
	for i := range 3 {
		if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatalf("SIGHUP %d: %v", i, err)
		}
	}
	// Give a default-action SIGHUP time to land before the file is read:
	// without this the old app could finish starting first. A pass needs
	// no sleep (the checks below poll).
	time.Sleep(100 * time.Millisecond)
	if _, err := io.WriteString(w, rules); err != nil {
		t.Fatalf("writing the policy: %v (exited: %v)\n%s", err, exited(cmd.Process.Pid), stderr.String())
	}
	w.Close()
	waitLog(t, cmd, stderr, `"msg":"serving"`)
	// The SIGHUPs, merged into one request, reload the policy now. The
	// FIFO has no writer any more, so the reload reads an empty file and
	// keeps the rules: what counts is that it is attempted, once.
	waitLog(t, cmd, stderr, "SIGHUP: policy reload")
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitExit(t, cmd, stderr)
	if got := strings.Count(stderr.String(), "SIGHUP: policy reload"); got != 1 {
		t.Errorf("%d reloads for three SIGHUPs sent before the first read; want them merged into 1", got)
	}
}

// Ensure SIGHUPs right after the app serves, and right after SIGTERM, never
// kill it: bounded rounds of start, SIGHUPs, SIGTERM, SIGHUP, exit 0.
func TestSIGHUPAroundStartAndStop(t *testing.T) {
	for round := range 3 {
		cmd, _, _, _, stderr := startBinary(t)
		for range 3 {
			if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
				t.Fatal(err)
			}
		}
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		cmd.Process.Signal(syscall.SIGHUP) // may find it exited: that is fine
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("round %d: exit %v (%v); want 0\n%s", round, err, cmd.ProcessState, stderr.String())
			}
		case <-time.After(60 * time.Second):
			t.Fatalf("round %d: no exit in 60 s", round)
		}
	}
}

// Ensure a SIGTERM while the app starts (held reading --policy, a FIFO)
// is a clean stop once start-up is done: status 0, nothing served.
func TestSIGTERMWhileStarting(t *testing.T) {
	cmd, fifo, stderr, w := startWithFIFOPolicy(t)
	waitOpened(t, cmd, fifo, stderr)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, "default: {decision: serve, region: us-east-2}\n")
	w.Close()
	waitExit(t, cmd, stderr)
}
