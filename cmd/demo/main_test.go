package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/originlens/originlens/internal/heatmap"
	"github.com/originlens/originlens/internal/mmdb"
	"github.com/originlens/originlens/internal/opensearchtest"
	"github.com/twmb/franz-go/pkg/kfake"
)

// buildPrograms builds the programs the demo starts into a temporary
// directory; bin/ingest only when cmd/ingest exists.
func buildPrograms(t *testing.T) (dir string, withIngest bool) {
	t.Helper()
	dir = t.TempDir()
	pkgs := []string{"../app", "../devkafka"}
	if _, err := os.Stat("../ingest/main.go"); err == nil {
		pkgs = append(pkgs, "../ingest")
		withIngest = true
	}
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, append([]string{"build", "-o", dir + "/"}, pkgs...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %v: %v\n%s", pkgs, err, out)
	}
	return dir, withIngest
}

// TestDemo runs the demo end to end twice in a row with a small traffic
// count (the second run proves ports, files and processes were released)
// and checks that the numbers add up: every connection is counted by the
// probes, the app and Kafka, and by ingest when it is built.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping: builds and runs the whole pipeline (-short)")
	}
	bin, withIngest := buildPrograms(t)
	if !withIngest {
		t.Log("cmd/ingest not present: running the demo without ingest")
	}
	work := t.TempDir()
	const count, spoofs = 60, 6
	for round := range 2 {
		var stdout bytes.Buffer
		cfg := Config{
			BinDir: bin, WorkDir: work, Table: "../../deploy/demo/geo-table.tsv",
			UI: "127.0.0.1:0", Count: count, Spoofs: spoofs, Concurrency: 4, Wait: 60 * time.Second,
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		res, err := runDemo(ctx, cfg, &stdout)
		cancel()
		if err != nil {
			t.Fatalf("round %d: runDemo() = %v\n%s", round, err, stdout.String())
		}
		checkResult(t, round, res, stdout.String(), count, spoofs, withIngest, false)
		if withIngest {
			// Without OPENSEARCH_URL ingest indexes nothing: the summary
			// says so and counts what ingest consumed.
			for _, want := range []string{
				fmt.Sprintf("produced %d (Kafka topic %s), consumed %d by ingest (nothing indexed: set OPENSEARCH_URL to index into OpenSearch)", count+spoofs, topic, count+spoofs),
				"deny  ingested\n",
			} {
				if !strings.Contains(stdout.String(), want) {
					t.Errorf("round %d: summary lacks %q", round, want)
				}
			}
			if strings.Contains(stdout.String(), "indexing into") {
				t.Errorf("round %d: the demo claims to index without OPENSEARCH_URL", round)
			}
		}
		// Every program the demo started is gone.
		if len(res.PIDs) < 2 {
			t.Errorf("round %d: %d programs started, want devkafka, app (and ingest)", round, len(res.PIDs))
		}
		for _, pid := range res.PIDs {
			if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
				t.Errorf("round %d: process %d still exists after the demo (kill 0: %v)", round, pid, err)
			}
		}
		if t.Failed() {
			t.Logf("round %d output:\n%s", round, stdout.String())
			return
		}
	}
}

// checkResult asserts that a demo run's numbers add up.
// indexing: OPENSEARCH_URL was set (else ingest indexes nothing).
func checkResult(t *testing.T, round int, res result, stdout string, count, spoofs int, withIngest, indexing bool) {
	t.Helper()
	tl := res.Tally
	if tl.Served+tl.Redirect+tl.Denied != count || tl.Refused != spoofs || tl.Failed != 0 {
		t.Errorf("round %d: probes served %d + redirected %d + denied %d, refused %d, failed %d; want %d, %d, 0",
			round, tl.Served, tl.Redirect, tl.Denied, tl.Refused, tl.Failed, count, spoofs)
	}
	if tl.Served == 0 || tl.Redirect == 0 || tl.Denied == 0 {
		t.Errorf("round %d: want some of each decision, got served %d redirected %d denied %d", round, tl.Served, tl.Redirect, tl.Denied)
	}
	if got, want := res.AppActions, map[string]int{
		"connection-closed": tl.Served + tl.Redirect, "connection-denied": tl.Denied, "connection-refused": spoofs,
	}; !cmp.Equal(got, want) || res.AppSpoofs != spoofs {
		t.Errorf("round %d: app metrics %v spoofs %d, want %v spoofs %d", round, got, res.AppSpoofs, want, spoofs)
	}
	if res.Produced != int64(count+spoofs) {
		t.Errorf("round %d: %d events produced, want %d", round, res.Produced, count+spoofs)
	}
	if withIngest {
		wantIndexed := int64(-1) // nothing indexed
		if indexing {
			wantIndexed = res.Produced
		}
		if res.Indexing != indexing || res.Indexed != wantIndexed || res.Consumed != res.Produced || res.DeadLettered != 0 ||
			res.HeatmapEvents != res.Produced || res.Heatmap == nil {
			t.Errorf("round %d: indexing %v, %d events indexed (want %d), %d consumed, %d dead-lettered, %d in the heat map; want %d",
				round, res.Indexing, res.Indexed, wantIndexed, res.Consumed, res.DeadLettered, res.HeatmapEvents, res.Produced)
		} else {
			for iso, c := range tl.ByCountry {
				if iso == "--" {
					continue
				}
				found := false
				for _, hc := range res.Heatmap.Countries {
					if hc.ISO == iso {
						found = true
						if hc.Count != int64(c.N) || hc.Decisions.Serve != int64(c.Serve) || hc.Decisions.Redirect != int64(c.Redirect) || hc.Decisions.Deny != int64(c.Deny) {
							t.Errorf("round %d: heat map %s = %+v, probes saw %+v", round, iso, hc, *c)
						}
					}
				}
				if !found {
					t.Errorf("round %d: heat map lacks %s", round, iso)
				}
			}
		}
		checkPageMatchesSummary(t, round, res, stdout, spoofs)
		if indexing && res.Heatmap != nil && (res.Heatmap.Source != "opensearch" || res.Heatmap.Note != "") {
			// The page's counters must then be OpenSearch's aggregations,
			// not the in-memory fallback.
			t.Errorf("round %d: heat map from %q (%s), want opensearch", round, res.Heatmap.Source, res.Heatmap.Note)
		}
	}
	for _, want := range []string{"summary", "connections", "produced", "United States", "North Korea", "where to look"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("round %d: summary lacks %q:\n%s", round, want, stdout)
		}
	}
	if strings.Contains(stdout, "WARNING") {
		t.Errorf("round %d: summary warns:\n%s", round, stdout)
	}
}

// checkPageMatchesSummary: the heat-map page's counters (its /api/heatmap
// totals for the run) and the summary count the same things: the clients
// without a country are the summary's "(unplaced)" row, and the refused
// spoof attempts are refused, never unplaced (issue 15, item 9: the page
// said unplaced 22 where the summary said 2).
func checkPageMatchesSummary(t *testing.T, round int, res result, stdout string, spoofs int) {
	t.Helper()
	page, ok := res.heatmapRun()
	if !ok {
		t.Errorf("round %d: no heat-map counters", round)
		return
	}
	unplaced := res.Tally.unplaced()
	if page.Unplaced != int64(unplaced) || page.Refused != int64(spoofs) {
		t.Errorf("round %d: page unplaced %d refused %d; summary (probes) unplaced %d refused %d",
			round, page.Unplaced, page.Refused, unplaced, spoofs)
	}
	if want := fmt.Sprintf(", unplaced %d, refused %d", page.Unplaced, page.Refused); !strings.Contains(stdout, want) {
		t.Errorf("round %d: summary lacks the page's counters %q", round, want)
	}
	if unplaced > 0 {
		row := regexp.MustCompile(`\(unplaced\)\s+--\s+(\d+)\s+\d+\s+\d+\s+\d+\s+(\d+)\n`).FindStringSubmatch(stdout)
		if row == nil || row[1] != fmt.Sprint(unplaced) || row[2] != fmt.Sprint(page.Unplaced) {
			t.Errorf("round %d: summary's (unplaced) row %q, want %d probes and the page's %d", round, row, unplaced, page.Unplaced)
		}
	}
}

// TestDemoExternal runs the demo the way the Compose setup does: against
// an external Kafka (a kfake cluster started here, topic created by the
// app), an external OpenSearch and Dashboards (the in-process stand-in,
// reached only through its URL).
func TestDemoExternal(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping: builds and runs the whole pipeline (-short)")
	}
	bin, withIngest := buildPrograms(t)
	if !withIngest {
		t.Skip("skipping: cmd/ingest not present")
	}
	kc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	stand := opensearchtest.NewServer()
	defer stand.Close()
	const count, spoofs = 40, 4
	var stdout bytes.Buffer
	cfg := Config{
		BinDir: bin, WorkDir: t.TempDir(), Table: "../../deploy/demo/geo-table.tsv", UI: "127.0.0.1:0",
		KafkaBrokers: strings.Join(kc.ListenAddrs(), ","), OpenSearchURL: stand.URL, DashboardsURL: stand.URL,
		Count: count, Spoofs: spoofs, Concurrency: 4, Wait: 60 * time.Second,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := runDemo(ctx, cfg, &stdout)
	if err != nil {
		t.Fatalf("runDemo() = %v\n%s", err, stdout.String())
	}
	checkResult(t, 0, res, stdout.String(), count, spoofs, true, true)
	if want := fmt.Sprintf("indexed %d (OpenSearch %s)", count+spoofs, stand.URL); !strings.Contains(stdout.String(), want) {
		t.Errorf("summary lacks %q", want)
	}
	if !strings.Contains(stdout.String(), "deny  indexed\n") {
		t.Errorf("the per-country table lacks its indexed column")
	}
	if got := stand.Count(indexPattern); got != count+spoofs {
		t.Errorf("OpenSearch holds %d documents, want %d", got, count+spoofs)
	}
	if _, ok := stand.SavedObject("dashboard", dashboardID); !ok {
		t.Errorf("dashboard %s not imported into Dashboards", dashboardID)
	}
	if !strings.Contains(stdout.String(), "/app/dashboards#/view/"+dashboardID) {
		t.Errorf("summary does not point at the dashboard:\n%s", stdout.String())
	}
	if t.Failed() {
		t.Logf("output:\n%s", stdout.String())
	}
}

// TestDemoInterrupted cancels the demo during its traffic run: it must stop
// what it started and return without error.
func TestDemoInterrupted(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping: builds and runs the pipeline (-short)")
	}
	bin, _ := buildPrograms(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	var res result
	go func() {
		var err error
		res, err = runDemo(ctx, Config{BinDir: bin, WorkDir: t.TempDir(), Table: "../../deploy/demo/geo-table.tsv",
			UI: "127.0.0.1:0", Count: 100000, Spoofs: 0, Concurrency: 2, Wait: time.Minute}, pw)
		pw.Close()
		done <- err
	}()
	var out bytes.Buffer
	buf := make([]byte, 4096)
	for !strings.Contains(out.String(), "traffic:") {
		n, err := pr.Read(buf)
		if err != nil {
			t.Fatalf("demo ended before its traffic run:\n%s", out.String())
		}
		out.Write(buf[:n])
	}
	time.Sleep(300 * time.Millisecond)
	cancel()
	go io.Copy(&out, pr)
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("interrupted runDemo() = %v", err)
		}
	case <-time.After(90 * time.Second):
		t.Fatal("demo did not stop within 90s of the interrupt")
	}
	for _, pid := range res.PIDs {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("process %d still exists after the interrupted demo", pid)
		}
	}
}

func TestSources(t *testing.T) {
	f, err := os.Open("../../deploy/demo/geo-table.tsv")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	table, err := mmdb.ParseTable(f)
	if err != nil {
		t.Fatalf("the demo table does not parse: %v", err)
	}
	srcs := sources(table)
	seen := map[netip.AddrPort]bool{}
	countries := map[string]bool{}
	for i, s := range srcs {
		if seen[s] {
			t.Errorf("source %v repeated", s)
		}
		seen[s] = true
		placed := false
		for _, e := range table.City {
			if e.Prefix.Contains(s.Addr()) {
				placed = true
				if i < len(table.City) {
					countries[e.CountryISO] = true
				}
			}
		}
		if !placed && !netip.MustParsePrefix("192.0.2.240/28").Contains(s.Addr()) {
			t.Errorf("source %v is in no table network", s)
		}
		if !s.Addr().IsGlobalUnicast() && !s.Addr().Is6() {
			t.Errorf("source %v is not a unicast address", s)
		}
	}
	// The first round of sources spans every country of the table.
	want := map[string]bool{}
	for _, e := range table.City {
		want[e.CountryISO] = true
	}
	if len(countries) != len(want) || len(want) < 30 {
		t.Errorf("first %d sources span %d countries, want all %d (>= 30)", len(table.City), len(countries), len(want))
	}
	for _, iso := range []string{"KP", "DE", "US"} {
		if !want[iso] {
			t.Errorf("the table lacks %s: the demo needs a denied, a redirected and a served country", iso)
		}
	}
}

func TestParseFlags(t *testing.T) {
	env := map[string]string{"DEMO_KEEP": "1", "GEOIP_DB": "/g.mmdb", "KAFKA_BROKERS": "k:9092", "DEMO_COUNT": "50"}
	cfg, err := parseFlags([]string{"--spoofs", "3"}, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Keep || cfg.GeoIPDB != "/g.mmdb" || cfg.KafkaBrokers != "k:9092" || cfg.Count != 50 || cfg.Spoofs != 3 || cfg.UI != "127.0.0.1:8088" {
		t.Errorf("parseFlags = %+v", cfg)
	}
	for _, args := range [][]string{{"--count", "0"}, {"--spoofs", "x"}, {"--wait", "-1s"}, {"extra"}, {"--dashboards-url", "http://127.0.0.1:5601"}} {
		if _, err := parseFlags(args, func(string) string { return "" }, io.Discard); err == nil {
			t.Errorf("parseFlags(%q) = nil error, want one", args)
		}
	}
}

// TestDemoBinaryWithoutStandIn: the OpenSearch stand-in is for tests; the
// demo without OPENSEARCH_URL runs ingest without OpenSearch instead.
func TestDemoBinaryWithoutStandIn(t *testing.T) {
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	out, err := exec.Command(goBin, "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.HasSuffix(dep, "/internal/opensearchtest") {
			t.Errorf("the demo binary depends on %s", dep)
		}
	}
}

// withPage gives a result a heat map whose run counted t, after a first
// run of 5 events (2 refused, 1 unplaced), and one unplaced probe client.
func withPage(t heatmap.Totals) func(*result) {
	return func(r *result) {
		before := heatmap.Totals{Events: 5, Refused: 2, Unplaced: 1}
		after := t
		after.Events, after.Refused, after.Unplaced = t.Events+before.Events, t.Refused+before.Refused, t.Unplaced+before.Unplaced
		r.Heatmap, r.HeatmapBefore = &heatmap.Snapshot{Totals: after}, before
		r.Tally.ByCountry = map[string]*countryTally{"--": {ISO: "--", N: 1, Serve: 1}}
	}
}

// TestProblems: numbers that do not add up are reported (the summary then
// prints a WARNING and the demo exits non-zero).
func TestProblems(t *testing.T) {
	ok := func() result {
		return result{
			Tally:      &tally{Served: 5, Redirect: 3, Denied: 2, Refused: 2},
			AppActions: map[string]int{}, AppSpoofs: 2,
			Produced: 12, Indexed: -1, Consumed: 12, HeatmapEvents: 12,
		}
	}
	tests := []struct {
		name   string
		change func(*result)
		want   string // a problem containing this; "": none
	}{
		{"adds up without OpenSearch", func(*result) {}, ""},
		{"adds up with OpenSearch", func(r *result) { r.Indexing, r.Indexed = true, 12 }, ""},
		{"ingest consumed too few", func(r *result) { r.Consumed = 11 }, "ingest consumed 11 events, want the 12 produced"},
		{"ingest consumed too many", func(r *result) { r.Consumed = 13 }, "ingest consumed 13 events, want the 12 produced"},
		{"dead-lettered", func(r *result) { r.DeadLettered = 1 }, "dead-lettered 1 events"},
		{"heat map short", func(r *result) { r.HeatmapEvents = 10 }, "the heat map counted 10 events, want the 12 produced"},
		{"index short", func(r *result) { r.Indexing, r.Indexed = true, 9 }, "9 events indexed, want the 12 produced"},
		{"produced short", func(r *result) { r.Produced = 11 }, "11 events produced, want one per connection: 12"},
		{"spoof not refused", func(r *result) { r.Tally.Refused = 1 }, "1 connections refused, want exactly the 2 spoof attempts"},
		{"page agrees", withPage(heatmap.Totals{Events: 12, Refused: 2, Unplaced: 1}), ""},
		{"page counts spoofs as unplaced", withPage(heatmap.Totals{Events: 12, Refused: 2, Unplaced: 3}), "the heat map counted 3 unplaced clients, the probes 1"},
		{"page misses refused", withPage(heatmap.Totals{Events: 12, Refused: 0, Unplaced: 1}), "the heat map counted 0 refused connections, the probes 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := ok()
			tt.change(&r)
			p := r.problems(2)
			var sum bytes.Buffer
			printSummary(&sum, Config{Spoofs: 2}, r, "", "logs")
			if tt.want == "" {
				if len(p) != 0 || strings.Contains(sum.String(), "WARNING") {
					t.Errorf("problems = %q, want none\n%s", p, sum.String())
				}
				return
			}
			if !strings.Contains(strings.Join(p, "\n"), tt.want) {
				t.Errorf("problems = %q, want one with %q", p, tt.want)
			}
			if !strings.Contains(sum.String(), "WARNING: the numbers do not add up") || !strings.Contains(sum.String(), tt.want) {
				t.Errorf("summary does not warn about %q:\n%s", tt.want, sum.String())
			}
		})
	}
}
