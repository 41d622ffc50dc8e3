package policy_test

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/originlens/originlens/internal/policy"
)

// TestLoadFIFO: a FIFO in the rules file's place with no writer made Load
// block for ever in open(2); on SIGHUP the app's reloader hung there, and
// SIGTERM then drained but never exited. Load must return an error at
// once; a pipe with a writer (a shell's --policy <(...)) still loads.
func TestLoadFIFO(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "rules.yaml")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := policy.Load(fifo)
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Error("Load(a FIFO with no writer) succeeded, want error")
		}
	case <-time.After(30 * time.Second):
		// Unblock the goroutine so the test ends.
		if f, err := os.OpenFile(fifo, os.O_WRONLY, 0); err == nil {
			f.Close()
		}
		t.Fatal("Load(a FIFO with no writer) still blocked after 30 s")
	}

	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	go func() {
		w.Write(policy.DefaultRules())
		w.Close()
	}()
	if _, err := policy.Load(fmt.Sprintf("/proc/self/fd/%d", r.Fd())); err != nil {
		t.Errorf("Load(a pipe with a writer) = %v, want the rules", err)
	}
}
