package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestKafkaSpoolDirRemovedWhileServing is the operator attack that lost
// every event: the app binary in disk buffer mode (the default) with a
// healthy broker serves connections whose events wait in the spool for
// the linger, and the spool directory is removed (rm -rf) before they
// leave. Every connection's event must still reach the topic, those served
// after the removal too, with nothing counted lost; the directory comes
// back with its mode and one WARN line says so. Before, all 25 events
// were lost (dropped_total{reason="spool_corrupt"} 25).
func TestKafkaSpoolDirRemovedWhileServing(t *testing.T) {
	c := kafkaCluster(t, 0)
	addr := c.ListenAddrs()[0]
	spool := filepath.Join(t.TempDir(), "spool")
	// A linger long enough that the first batch is still in the spool
	// when the directory goes.
	cmd, listen, admin, _, stderr := startBinary(t, "--kafka-brokers", addr, "--kafka-buffer", "disk", "--spool-dir", spool, "--kafka-linger", "3s")
	st, err := os.Stat(spool)
	if err != nil {
		t.Fatal(err)
	}
	const n = 25
	ports := serveLines(t, listen, n)
	_, body := adminGet(t, admin, "/metrics")
	if sent := metricValue(body, "originlens_kafka_events_sent_total"); sent != 0 {
		t.Logf("%v events left before the removal (a slow machine): the test covers fewer of them", sent)
	}
	if err := os.RemoveAll(spool); err != nil {
		t.Fatal(err)
	}
	for p := range serveLines(t, listen, n) {
		ports[p] = true
	}
	waitUntil(t, "every event acknowledged or counted lost", func() bool {
		_, body = adminGet(t, admin, "/metrics")
		return metricValue(body, "originlens_kafka_events_sent_total")+metricValue(body, `originlens_kafka_events_dropped_total{reason="spool_corrupt"}`)+
			metricValue(body, `originlens_kafka_events_dropped_total{reason="spool_removed"}`) >= 2*n
	})
	for _, r := range []string{"spool_corrupt", "spool_removed", "spool_error"} {
		if v := metricValue(body, `originlens_kafka_events_dropped_total{reason="`+r+`"}`); v != 0 {
			t.Errorf("dropped_total{reason=%q} = %v, want 0", r, v)
		}
	}
	// Recreated at the next segment or the next fsync interval (1 s).
	waitUntil(t, "the spool directory recreated", func() bool { _, err := os.Stat(spool); return err == nil })
	if st2, err := os.Stat(spool); err != nil || st2.Mode().Perm() != st.Mode().Perm() {
		t.Errorf("spool directory after the removal: %v, %v; want it recreated with mode %v", st2, err, st.Mode().Perm())
	}
	if k := strings.Count(stderr.String(), "spool directory was removed"); k != 1 {
		t.Errorf("%d log lines say the spool directory was removed, want 1:\n%s", k, stderr.String())
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("app exit after SIGTERM: %v\n%s", err, stderr.String())
	}
	evs := kafkaEvents(t, addr)
	if len(evs) != 2*n {
		t.Errorf("%d events on the topic, want exactly %d", len(evs), 2*n)
	}
	checkEvents(t, evs, ports)
}
