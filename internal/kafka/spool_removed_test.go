package kafka

import (
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
)

// spoolSegments returns the segment files in dir, sorted.
func spoolSegments(t testing.TB, dir string) []string {
	t.Helper()
	segs, err := filepath.Glob(filepath.Join(dir, "*.seg"))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(segs)
	return segs
}

// checkExactlyOnce checks that every published event reached the topic
// exactly once: the distinct ids are the published ones, no duplicates.
func checkExactlyOnce(t testing.TB, addr string, ids []string) {
	t.Helper()
	got := checkMessages(t, readTopic(t, addr, testTopic))
	if dups := checkDelivered(t, ids, got); dups != 0 {
		t.Errorf("%d duplicates, want every event exactly once", dups)
	}
	if len(got) != len(ids) {
		t.Errorf("%d distinct events on the topic, want %d", len(got), len(ids))
	}
}

// checkNoLoss checks that no event was counted as lost.
func checkNoLoss(t testing.TB, h *harness) {
	t.Helper()
	if d := h.metric(t, "originlens_kafka_events_dropped_total"); d != 0 {
		t.Errorf("events_dropped_total = %v, want 0 (spool_corrupt %v, spool_removed %v, spool_error %v)", d,
			h.metric(t, "originlens_kafka_events_dropped_total", "reason=spool_corrupt"),
			h.metric(t, "originlens_kafka_events_dropped_total", "reason=spool_removed"),
			h.metric(t, "originlens_kafka_events_dropped_total", "reason=spool_error"))
	}
	if b := h.metric(t, "originlens_kafka_spool_corrupt_bytes_total"); b != 0 {
		t.Errorf("spool_corrupt_bytes_total = %v, want 0", b)
	}
}

// deadBroker returns a loopback port nobody listens on and its address,
// where a broker can be started later.
func deadBroker(t testing.TB) (int, string) {
	port := reservePort(t)
	return port, net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}

// waitSentOrLost waits until n events are acknowledged (live or replayed)
// or counted lost and
// the spool is empty (a failure bound, not a speed goal).
func waitSentOrLost(t testing.TB, h *harness, n int) {
	t.Helper()
	waitFor(t, "every event acknowledged or counted lost", func() bool {
		return h.metric(t, "originlens_kafka_events_sent_total")+h.metric(t, "originlens_kafka_events_replayed_total")+
			h.metric(t, "originlens_kafka_events_dropped_total") >= float64(n) &&
			h.metric(t, "originlens_kafka_spool_records") == 0
	})
}

// TestProducerSpoolRemovedBeforeDelivery: during an outage (disk mode,
// small segments, so several sealed ones plus the active one hold the
// events), the spool's files are taken away behind the producer's back:
// the whole directory removed (rm -rf), one sealed segment unlinked, the
// active segment unlinked mid-write, the directory replaced by an empty
// one with the same name. The spool holds every segment's file open
// until Kafka has it, so when the broker appears every event arrives
// exactly once and nothing is counted lost; the removed directory is
// recreated with its permissions for the events published after the
// removal, which arrive too, and that is said once.
//
// Before, the sealed segment was closed and reopened by name: every event
// in a removed file was lost (counted as spool_corrupt), and new segments
// could not be created in the missing directory.
func TestProducerSpoolRemovedBeforeDelivery(t *testing.T) {
	for _, tc := range []struct {
		name   string
		attack func(t *testing.T, dir string)
	}{
		{"dir removed", func(t *testing.T, dir string) {
			if err := os.RemoveAll(dir); err != nil {
				t.Fatal(err)
			}
		}},
		{"sealed segment unlinked", func(t *testing.T, dir string) {
			segs := spoolSegments(t, dir)
			if len(segs) < 3 {
				t.Fatalf("only %d segments; the test needs sealed ones", len(segs))
			}
			if err := os.Remove(segs[1]); err != nil {
				t.Fatal(err)
			}
		}},
		{"active segment unlinked", func(t *testing.T, dir string) {
			segs := spoolSegments(t, dir)
			if err := os.Remove(segs[len(segs)-1]); err != nil {
				t.Fatal(err)
			}
		}},
		{"dir replaced by an empty one", func(t *testing.T, dir string) {
			if err := os.RemoveAll(dir); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			port, addr := deadBroker(t)
			dir := filepath.Join(t.TempDir(), "spool")
			// An unusual mode, so that "recreated with its permissions" can fail.
			if err := os.Mkdir(dir, 0o710); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(dir, 0o710); err != nil {
				t.Fatal(err)
			}
			h := newHarness(t, addr, ProducerConfig{Buffer: BufferDisk, SpoolDir: dir, SpoolSegmentBytes: 4096, BatchSize: 50})
			h.run(t)
			waitFor(t, "degraded", h.p.Degraded)
			const n, m = 60, 60
			ids := publishN(h.p, 0, n)
			if got := h.metric(t, "originlens_kafka_events_spooled_total"); got != n {
				t.Fatalf("events_spooled_total = %v, want %d", got, n)
			}
			tc.attack(t, dir)
			// Events published after the attack: they fill the active
			// segment (an unlinked file, in two of the cases) and then
			// need a new segment file.
			ids = append(ids, publishN(h.p, n, m)...)
			if got := h.metric(t, "originlens_kafka_events_spooled_total"); got != n+m {
				t.Errorf("events_spooled_total = %v after the attack, want %d: the spool refused events", got, n+m)
			}
			if st, err := os.Lstat(dir); err != nil {
				t.Errorf("spool directory not recreated: %v", err)
			} else if tc.name == "dir removed" && st.Mode().Perm() != 0o710 {
				t.Errorf("recreated spool directory has mode %v, want %v", st.Mode().Perm(), os.FileMode(0o710))
			}
			if tc.name == "dir removed" {
				if got := strings.Count(h.logs.String(), "spool directory was removed"); got != 1 {
					t.Errorf("%d log lines say the directory was removed, want 1:\n%s", got, h.logs.String())
				}
			}
			c := startCluster(t, kfake.Ports(port), kfake.SeedTopics(3, testTopic))
			waitSentOrLost(t, h, n+m)
			h.close(t)
			checkNoLoss(t, h)
			checkExactlyOnce(t, c.ListenAddrs()[0], ids)
			if segs := spoolSegments(t, dir); len(segs) != 0 {
				t.Errorf("segments left after every event was delivered: %v", segs)
			}
		})
	}
}

// TestProducerSpoolRemovedMemoryMode: the same removal in memory buffer
// mode, where the spool holds what an outage keeps from Kafka: every event
// is replayed once the broker is back, none counted lost.
func TestProducerSpoolRemovedMemoryMode(t *testing.T) {
	port, addr := deadBroker(t)
	dir := filepath.Join(t.TempDir(), "spool")
	h := newHarness(t, addr, ProducerConfig{Buffer: BufferMemory, SpoolDir: dir, SpoolSegmentBytes: 4096, BatchSize: 50})
	h.run(t)
	waitFor(t, "degraded", h.p.Degraded)
	const n, m = 60, 60
	ids := publishN(h.p, 0, n)
	waitFor(t, "spooled", func() bool { return h.metric(t, "originlens_kafka_events_spooled_total") == n })
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	ids = append(ids, publishN(h.p, n, m)...)
	waitFor(t, "spooled after the removal", func() bool {
		return h.metric(t, "originlens_kafka_events_spooled_total")+h.metric(t, "originlens_kafka_events_dropped_total") >= n+m
	})
	c := startCluster(t, kfake.Ports(port), kfake.SeedTopics(3, testTopic))
	waitSentOrLost(t, h, n+m)
	h.close(t)
	checkNoLoss(t, h)
	checkExactlyOnce(t, c.ListenAddrs()[0], ids)
}

// TestProducerSpoolRemovedDuringRecovery: a restart finds the segments an
// earlier run left; they are unlinked (or the directory removed) after
// the spool opened them and before the replay. The open files carry them
// to Kafka.
func TestProducerSpoolRemovedDuringRecovery(t *testing.T) {
	for _, removeDir := range []bool{false, true} {
		t.Run("removeDir="+strconv.FormatBool(removeDir), func(t *testing.T) {
			port, addr := deadBroker(t)
			dir := filepath.Join(t.TempDir(), "spool")
			cfg := ProducerConfig{Buffer: BufferDisk, SpoolDir: dir, SpoolSegmentBytes: 4096, BatchSize: 50}
			h1 := newHarness(t, addr, cfg)
			h1.run(t)
			waitFor(t, "degraded", h1.p.Degraded)
			const n = 80
			ids := publishN(h1.p, 0, n)
			h1.close(t)
			if len(spoolSegments(t, dir)) < 2 {
				t.Fatalf("the first run left %d segments, want several", len(spoolSegments(t, dir)))
			}

			h2 := newHarness(t, addr, cfg) // opens the spool: recovery
			if removeDir {
				if err := os.RemoveAll(dir); err != nil {
					t.Fatal(err)
				}
			} else {
				for _, s := range spoolSegments(t, dir) {
					if err := os.Remove(s); err != nil {
						t.Fatal(err)
					}
				}
			}
			c := startCluster(t, kfake.Ports(port), kfake.SeedTopics(3, testTopic))
			h2.run(t)
			ids = append(ids, publishN(h2.p, n, 20)...)
			waitSentOrLost(t, h2, n+20)
			h2.close(t)
			checkNoLoss(t, h1)
			checkNoLoss(t, h2)
			checkExactlyOnce(t, c.ListenAddrs()[0], ids)
		})
	}
}

// TestProducerSpoolDirCannotBeRecreated: the spool directory is removed
// and its parent replaced by a file, so no new segment can be made. The
// events already spooled still arrive; those published after are not lost
// silently: they wait in memory and go to Kafka when it is reachable, and
// what cannot wait is counted as spool_error (never spool_corrupt), with a
// log line that names the directory.
func TestProducerSpoolDirCannotBeRecreated(t *testing.T) {
	port, addr := deadBroker(t)
	parent := filepath.Join(t.TempDir(), "parent")
	dir := filepath.Join(parent, "spool")
	h := newHarness(t, addr, ProducerConfig{Buffer: BufferDisk, SpoolDir: dir, SpoolSegmentBytes: 4096, BatchSize: 50})
	h.run(t)
	waitFor(t, "degraded", h.p.Degraded)
	const n, m = 40, 40
	ids := publishN(h.p, 0, n)
	if err := os.RemoveAll(parent); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(parent, []byte("not a directory"), 0o600); err != nil {
		t.Fatal(err)
	}
	more := publishN(h.p, n, m)
	waitFor(t, "the refused events handled", func() bool {
		return h.metric(t, "originlens_kafka_events_dropped_total", "reason=spool_error") > 0 || h.metric(t, "originlens_kafka_events_queued_total") > 0
	})
	if !strings.Contains(h.logs.String(), "spool directory") {
		t.Errorf("no log line about the spool directory:\n%s", h.logs.String())
	}
	c := startCluster(t, kfake.Ports(port), kfake.SeedTopics(3, testTopic))
	waitFor(t, "the spooled events acknowledged", func() bool {
		return h.metric(t, "originlens_kafka_events_sent_total") >= n && h.metric(t, "originlens_kafka_spool_records") == 0
	})
	h.close(t)
	got := checkMessages(t, readTopic(t, c.ListenAddrs()[0], testTopic))
	for _, id := range ids {
		if got[id] != 1 {
			t.Errorf("event %s spooled before the removal arrived %d times, want 1", id, got[id])
		}
	}
	delivered := 0
	for _, id := range more {
		delivered += min(got[id], 1)
	}
	dropped := h.metric(t, "originlens_kafka_events_dropped_total", "reason=spool_error")
	if delivered+int(dropped) != m {
		t.Errorf("of %d events published after the removal, %d delivered + %v counted spool_error, want every one of them either", m, delivered, dropped)
	}
	for _, r := range []string{"spool_corrupt", "spool_removed", "spool_cap"} {
		if d := h.metric(t, "originlens_kafka_events_dropped_total", "reason="+r); d != 0 {
			t.Errorf("dropped{%s} = %v, want 0", r, d)
		}
	}
	t.Logf("after the removal: %d delivered, %v dropped as spool_error", delivered, dropped)
}

// TestProducerSpoolDirReplacedBySymlink: the spool directory is replaced
// by a symbolic link to a directory someone else controls. New segments
// are not created there (the link is not followed); events go on reaching
// Kafka from memory, and the spooled ones from their open files.
func TestProducerSpoolDirReplacedBySymlink(t *testing.T) {
	c := startCluster(t, kfake.SeedTopics(3, testTopic))
	addr := c.ListenAddrs()[0]
	dir := filepath.Join(t.TempDir(), "spool")
	elsewhere := t.TempDir()
	h := newHarness(t, addr, ProducerConfig{Buffer: BufferDisk, SpoolDir: dir, SpoolSegmentBytes: 4096, BatchSize: 50, Linger: 200 * time.Millisecond})
	h.run(t)
	waitFor(t, "connected", func() bool { return h.p.state.Load() == stateHealthy })
	ids := publishN(h.p, 0, 100)
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(elsewhere, dir); err != nil {
		t.Fatal(err)
	}
	ids = append(ids, publishN(h.p, 100, 100)...)
	waitFor(t, "every event acknowledged or counted lost", func() bool {
		return h.metric(t, "originlens_kafka_events_sent_total")+h.metric(t, "originlens_kafka_events_dropped_total") >= 200
	})
	h.close(t)
	checkNoLoss(t, h)
	checkExactlyOnce(t, addr, ids)
	if ents, _ := os.ReadDir(elsewhere); len(ents) != 0 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("the spool wrote into the symlink's target: %v", names)
	}
	if !strings.Contains(h.logs.String(), "symbolic link") {
		t.Errorf("no log line about the symbolic link:\n%s", h.logs.String())
	}
}

// TestProducerSpoolRemovedOnFullDisk: the spool directory is removed
// while its file system (a 64 KiB tmpfs) is full: the removed segments
// still hold their space (the spool has them open), so the recreated
// directory's new segments are refused too. The events wait in memory
// and reach the healthy broker; nothing is lost or counted twice.
func TestProducerSpoolRemovedOnFullDisk(t *testing.T) {
	dir := filepath.Join(tinyTmpfs(t), "spool")
	c := startCluster(t, kfake.SeedTopics(3, testTopic))
	addr := c.ListenAddrs()[0]
	h := newHarness(t, addr, ProducerConfig{Buffer: BufferDisk, SpoolDir: dir, SpoolMaxBytes: 1 << 30, BatchSize: 5000, Linger: 2 * time.Second})
	h.run(t)
	waitFor(t, "connected", func() bool { return h.p.state.Load() == stateHealthy })
	ids := publishN(h.p, 0, 300)
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	ids = append(ids, publishN(h.p, 300, 700)...)
	if q := h.metric(t, "originlens_kafka_events_queued_total"); q == 0 {
		t.Fatalf("no event was refused by the full spool; the test proves nothing")
	}
	waitFor(t, "all acknowledged or counted lost", func() bool {
		return h.metric(t, "originlens_kafka_events_sent_total")+h.metric(t, "originlens_kafka_events_dropped_total") >= 1000
	})
	h.close(t)
	checkNoLoss(t, h)
	checkExactlyOnce(t, addr, ids)
}

// TestProducerSpoolRemovedThenStopped: the spool directory removed during
// an outage, then the producer closed (a clean stop): Close writes the
// removed segments back into a recreated directory, so the next run
// replays them and every event arrives exactly once. When no directory
// can be made (its parent replaced by a file), Close counts the events as
// spool_removed: lost, but counted.
func TestProducerSpoolRemovedThenStopped(t *testing.T) {
	for _, recreatable := range []bool{true, false} {
		t.Run("recreatable="+strconv.FormatBool(recreatable), func(t *testing.T) {
			port, addr := deadBroker(t)
			parent := filepath.Join(t.TempDir(), "parent")
			dir := filepath.Join(parent, "spool")
			cfg := ProducerConfig{Buffer: BufferDisk, SpoolDir: dir, SpoolSegmentBytes: 4096, BatchSize: 50}
			h1 := newHarness(t, addr, cfg)
			h1.run(t)
			waitFor(t, "degraded", h1.p.Degraded)
			const n = 80
			ids := publishN(h1.p, 0, n)
			if err := os.RemoveAll(parent); err != nil {
				t.Fatal(err)
			}
			if !recreatable {
				if err := os.WriteFile(parent, nil, 0o600); err != nil {
					t.Fatal(err)
				}
				h1.close(t)
				if d := h1.metric(t, "originlens_kafka_events_dropped_total", "reason=spool_removed"); d != n {
					t.Errorf("dropped{spool_removed} = %v after Close, want %d: every event of the removed segments", d, n)
				}
				if d := h1.metric(t, "originlens_kafka_events_dropped_total", "reason=spool_corrupt"); d != 0 {
					t.Errorf("dropped{spool_corrupt} = %v, want 0", d)
				}
				if !strings.Contains(h1.logs.String(), "could not be written back") {
					t.Errorf("no log line for the lost segments:\n%s", h1.logs.String())
				}
				return
			}
			h1.close(t)
			if len(spoolSegments(t, dir)) == 0 {
				t.Fatalf("Close left no segment in the recreated directory:\n%s", h1.logs.String())
			}
			h2 := newHarness(t, addr, cfg)
			c := startCluster(t, kfake.Ports(port), kfake.SeedTopics(3, testTopic))
			h2.run(t)
			waitSentOrLost(t, h2, n)
			h2.close(t)
			checkNoLoss(t, h1)
			checkNoLoss(t, h2)
			checkExactlyOnce(t, c.ListenAddrs()[0], ids)
		})
	}
}
