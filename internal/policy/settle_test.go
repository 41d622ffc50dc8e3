package policy_test

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/originlens/originlens/internal/policy"
)

// TestLoadWhileWrittenInPlace: a rules file read while it is being written
// in place can be valid YAML that lacks the embargo rule (4 of the 35
// line-prefixes of the default rules parse and serve a KP client); Load
// adopted it. Load must return either the whole file's rules or an error,
// never a prefix, whenever it is called during the write.
func TestLoadWhileWrittenInPlace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(path, policy.DefaultRules(), 0o644); err != nil {
		t.Fatal(err)
	}
	// Make the file old, as a file in service is.
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(path, old, old); err != nil {
		t.Fatal(err)
	}
	lines := bytes.SplitAfter(policy.DefaultRules(), []byte("\n"))
	kp := netip.MustParseAddr("203.0.113.7")

	var writing atomic.Bool
	writing.Store(true)
	writerDone := make(chan error, 1)
	go func() {
		defer writing.Store(false)
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
		if err != nil {
			writerDone <- err
			return
		}
		defer f.Close()
		// Line by line, pausing less than Settle between lines: a slow
		// writer (a script, a remote copy) that is never done for Settle.
		for _, l := range lines {
			if _, err := f.Write(l); err != nil {
				writerDone <- err
				return
			}
			time.Sleep(policy.Settle / 5)
		}
		writerDone <- nil
	}()

	var wg sync.WaitGroup
	var loads, partial, complete atomic.Int64
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 10000 && writing.Load(); i++ {
				p, err := policy.Load(path)
				loads.Add(1)
				if err != nil {
					time.Sleep(time.Millisecond)
					continue
				}
				if d := p.Decide(kp, loc("public", "KP", "AS", 0)); d.Decision != policy.Deny {
					partial.Add(1)
				} else {
					complete.Add(1)
				}
				time.Sleep(time.Millisecond)
			}
		}()
	}
	wg.Wait()
	if err := <-writerDone; err != nil {
		t.Fatal(err)
	}
	t.Logf("%d loads during the write: %d complete rules, %d prefixes", loads.Load(), complete.Load(), partial.Load())
	if partial.Load() > 0 {
		t.Errorf("%d Loads during the write adopted a prefix of the file that serves a KP client", partial.Load())
	}
	if complete.Load() == 0 {
		t.Error("no Load returned the complete rules once the writer was done")
	}
}

// TestLoadOldFileAtOnce: a file in service (older than Settle) is read
// once, without waiting.
func TestLoadOldFileAtOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(path, policy.DefaultRules(), 0o644); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Minute)
	if err := os.Chtimes(path, old, old); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // a wait would fail with ctx's error
	if _, err := policy.LoadContext(ctx, path); err != nil {
		t.Fatalf("LoadContext(an old file, done ctx) = %v, want the rules without waiting", err)
	}
}

// TestLoadFreshFileSettles: a file just written whole is adopted after it
// settled; with its context done while waiting, LoadContext returns the
// context's error instead of rules it could not check.
func TestLoadFreshFileSettles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(path, policy.DefaultRules(), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := policy.Load(path); err != nil {
		t.Fatalf("Load(a fresh whole file) = %v", err)
	}
	if err := os.Chtimes(path, time.Now(), time.Now()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := policy.LoadContext(ctx, path); !errors.Is(err, context.Canceled) {
		t.Errorf("LoadContext(a fresh file, done ctx) = %v, want context.Canceled", err)
	}
}

// TestLoadFutureMtime: a file whose modification time is in the future
// (clock skew, touch -d) is adopted once two reads agree, not waited on
// until that time.
func TestLoadFutureMtime(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(path, policy.DefaultRules(), 0o644); err != nil {
		t.Fatal(err)
	}
	future := time.Now().Add(24 * time.Hour)
	if err := os.Chtimes(path, future, future); err != nil {
		t.Fatal(err)
	}
	if _, err := policy.Load(path); err != nil {
		t.Fatalf("Load(a file dated tomorrow) = %v, want the rules", err)
	}
}

// TestLoadKeepsChanging: a file rewritten more often than Settle for
// longer than the settle wait is refused with ErrUnsettled, not adopted
// and not waited on for ever.
func TestLoadKeepsChanging(t *testing.T) {
	defer policy.SetMaxSettleWait(time.Second)()
	path := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(path, policy.DefaultRules(), 0o644); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 3000; i++ { // at most 3000 x Settle/5
			select {
			case <-stop:
				return
			case <-time.After(policy.Settle / 5):
			}
			now := time.Now()
			os.Chtimes(path, now, now)
		}
	}()
	_, err := policy.Load(path)
	close(stop)
	<-done
	if !errors.Is(err, policy.ErrUnsettled) {
		t.Fatalf("Load(a file touched every %v) = %v, want ErrUnsettled", policy.Settle/5, err)
	}
	t.Log(err)
}
