package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/originlens/originlens/internal/probe/listener"
)

// serveListener runs the nc-probe listen server on ln until the returned
// stop function is called; stop waits for it and may be called again.
func serveListener(tb testing.TB, ln net.Listener) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- listener.New(listener.Config{}).Serve(ctx, ln) }()
	var once sync.Once
	return func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				tb.Errorf("Serve: %v", err)
			}
		})
	}
}

// TestWatchDowntime: --watch --format csv against a server (nc-probe
// listen in-process, and the app) stopped for about 2 s in the middle.
// Every CSV row parses, and the longest run of failures in the summary
// matches the measured downtime within the interval plus 1 s (the first
// failed and first recovered attempts start up to one interval after the
// stop and the restart; the second is slack for a loaded machine).
func TestWatchDowntime(t *testing.T) {
	t.Run("listen", func(t *testing.T) {
		testWatchDowntime(t, func(addr string) (stop func()) {
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				t.Fatalf("listening on %s: %v", addr, err)
			}
			stop = serveListener(t, ln)
			t.Cleanup(stop)
			return stop
		})
	})
	t.Run("app", func(t *testing.T) {
		testWatchDowntime(t, func(addr string) (stop func()) {
			_, stop = runApp(t, addr, "--proxy-protocol", "off")
			return stop
		})
	})
}

// testWatchDowntime runs the downtime test against the server start
// starts on an address; the stop function it returns must return once the
// server no longer accepts, and may be called twice.
func testWatchDowntime(t *testing.T, start func(addr string) (stop func())) {
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	stop := start(addr)

	const interval = 200 * time.Millisecond
	cfg, err := parseArgs([]string{"--watch", "--format", "csv", "-i", interval.String(), "--timeout", "2s", "-n", "40", addr}, noEnv, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	out, errb := &syncBuf{}, &syncBuf{}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second) // failure bound
	defer cancel()
	done := make(chan int, 1)
	go func() { done <- run(ctx, cfg, out, errb) }()

	rows := func() int { return strings.Count(out.String(), "\n") - 1 }
	waitUntil(t, func() bool { return rows() >= 5 }, "5 attempts before the stop")
	stop()
	down := time.Now()
	time.Sleep(2 * time.Second) // the outage itself
	start(addr)
	up := time.Now()
	actual := up.Sub(down)

	var code int
	select {
	case code = <-done:
	case <-ctx.Done():
		t.Fatalf("--watch -n 40 did not end: %s", out)
	}
	if code != exitPreserved {
		t.Errorf("exit %d, want 0: the attempts that got a report were preserved (the outage is loss, in the summary)", code)
	}
	recs, err := csv.NewReader(strings.NewReader(out.String())).ReadAll()
	if err != nil {
		t.Fatalf("CSV does not parse: %v\n%s", err, out)
	}
	if len(recs) != 41 || strings.Join(recs[0], ",") != "time,family,target,connect_ms,report_ms,server_saw,verdict,diagnosis" {
		t.Fatalf("%d CSV records, header %v; want a header and 40 rows\n%s", len(recs), recs[0], out)
	}
	failed := 0
	for _, r := range recs[1:] {
		if _, err := time.Parse(time.RFC3339Nano, r[0]); err != nil {
			t.Errorf("row %v: time: %v", r, err)
		}
		for _, f := range r[3:5] {
			if f == "" {
				continue
			}
			if v, err := strconv.ParseFloat(f, 64); err != nil || v < 0 {
				t.Errorf("row %v: %q is not a duration in ms", r, f)
			}
		}
		switch r[7] {
		case "preserved":
			if r[5] != "127.0.0.1" || r[6] != "preserved" || r[2] != addr || r[1] != "ipv4" {
				t.Errorf("row %v: want a preserved attempt of %s seen as 127.0.0.1", r, addr)
			}
		case "unreachable", "no-report", "timeout":
			failed++
			if r[1] != "ipv4" {
				// The target is an address: the family tried is known
				// even when the connection failed (it used to be empty).
				t.Errorf("row %v: family %q on a failed attempt to %s, want ipv4", r, r[1], addr)
			}
		default:
			t.Errorf("row %v: diagnosis %q", r, r[7])
		}
	}
	m := regexp.MustCompile(`longest run of failures: ([0-9.]+) s \((\d+) attempts?\) from (\S+) to (\S+), recovered`).FindStringSubmatch(errb.String())
	if m == nil {
		t.Fatalf("no recovered run of failures in the summary on stderr:\n%s", errb)
	}
	got, _ := strconv.ParseFloat(m[1], 64)
	tolerance := interval + time.Second
	if d := time.Duration(got * float64(time.Second)); d < actual-tolerance || d > actual+tolerance {
		t.Errorf("reported downtime %v, measured %v: more than %v apart\n%s", d, actual, tolerance, errb)
	}
	if n, _ := strconv.Atoi(m[2]); n != failed {
		t.Errorf("the run counts %d attempts, the CSV %d failures", n, failed)
	}
	t.Logf("measured downtime %v, reported %s s from %s to %s", actual, m[1], m[3], m[4])
}

// TestWatchLines: --watch prints one line per attempt with its diagnosis
// and times, then a summary.
func TestWatchLines(t *testing.T) {
	addr, _ := startListenArgs(t)
	code, out, _ := probeRun(t, "--watch", "-n", "3", "-i", "20ms", addr)
	lines := regexp.MustCompile(`(?m)^\d\d:\d\d:\d\d\.\d{3} `+regexp.QuoteMeta(addr)+` seq=\d+ preserved +connect [0-9.]+ ms report [0-9.]+ ms  saw 127\.0\.0\.1  \[0/\d failed\]$`).FindAllString(out, -1)
	if code != exitPreserved || len(lines) != 3 || !strings.Contains(out, "longest run of failures: none") {
		t.Errorf("--watch -n 3: exit %d, %d attempt lines; want 0, 3 and a summary\n%s", code, len(lines), out)
	}
}

func waitUntil(tb testing.TB, cond func() bool, what string) {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second) // failure bound
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
