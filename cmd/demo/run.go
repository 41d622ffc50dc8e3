package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/originlens/originlens/internal/heatmap"
	"github.com/originlens/originlens/internal/mmdb"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	kafkago "github.com/segmentio/kafka-go"
)

// topic is the Kafka topic of the connection events (the app's default).
const topic = "conn-events"

// stopGrace is how long a program gets to stop after SIGTERM.
const stopGrace = 30 * time.Second

// stack is what the demo started, stopped in reverse order.
type stack struct {
	procs []*proc
}

func (s *stack) add(p *proc) { s.procs = append(s.procs, p) }

// stop stops the programs newest first: the app drains and flushes to Kafka
// before ingest stops consuming, and the broker goes last.
func (s *stack) stop() error {
	var errs []error
	for i := len(s.procs) - 1; i >= 0; i-- {
		if err := s.procs[i].stop(stopGrace); err != nil {
			errs = append(errs, err)
		}
	}
	s.procs = nil
	return errors.Join(errs...)
}

// result is what the summary prints.
type result struct {
	Clients       int
	Countries     int
	Tally         *tally
	AppActions    map[string]int // from the app's /metrics: originlens_connections_total by action
	AppSpoofs     int            // originlens_proxy_header_errors_total{kind="spoof"}
	Produced      int64          // records added to the topic during the run; -1: unknown
	Indexing      bool           // ingest indexes into OPENSEARCH_URL (else: its own view only)
	Indexed       int64          // documents added to the index during the run; -1: not indexing
	IndexedWhere  string         // the OpenSearch
	Consumed      int64          // messages ingest fetched during the run (its /metrics); -1: unknown
	DeadLettered  int64          // messages ingest sent to its dead-letter topic during the run
	HeatmapEvents int64          // events ingest's heat map counted during the run; -1: no ingest
	Heatmap       *heatmap.Snapshot
	HeatmapBefore heatmap.Totals    // the heat map's counters before the traffic
	Names         map[string]string // country names by ISO code, from the table
	PIDs          []int             // the programs started (all stopped on return)
}

// run starts everything, runs the traffic, prints the summary and stops
// everything (unless cfg.Keep, then it waits for ctx). Interrupted by ctx, it
// stops what it started and returns nil.
func run(ctx context.Context, cfg Config, stdout, stderr io.Writer) error {
	_, err := runDemo(ctx, cfg, stdout)
	return err
}

// runDemo is run, returning what it measured for the tests. The result is
// partial when the demo was interrupted or failed.
func runDemo(ctx context.Context, cfg Config, stdout io.Writer) (res result, err error) {
	out := func(format string, args ...any) { fmt.Fprintf(stdout, format+"\n", args...) }
	for _, name := range []string{"app", "devkafka"} {
		if _, err := os.Stat(filepath.Join(cfg.BinDir, name)); err != nil {
			return res, fmt.Errorf("%s/%s is missing: run `make build` (or `make demo`, which builds first)", cfg.BinDir, name)
		}
	}
	unlock, err := prepareWorkDir(cfg.WorkDir)
	if err != nil {
		return res, err
	}
	defer unlock()
	logDir := filepath.Join(cfg.WorkDir, "logs")

	var st stack
	defer func() {
		for _, p := range st.procs {
			res.PIDs = append(res.PIDs, p.cmd.Process.Pid)
		}
		if serr := st.stop(); serr != nil && err == nil {
			err = fmt.Errorf("stopping: %w", serr)
		}
	}()
	interrupted := func(e error) error {
		if ctx.Err() != nil {
			out("\ninterrupted: stopping everything the demo started")
			return nil
		}
		return e
	}

	out("originlens demo: everything on 127.0.0.1; files in %s/ (logs in %s/)", cfg.WorkDir, logDir)

	// GeoIP database.
	geoDB := cfg.GeoIPDB
	var table mmdb.Table
	if geoDB == "" {
		geoDB = filepath.Join(cfg.WorkDir, "geoip", "demo-city.mmdb")
		if table, err = buildDB(cfg.Table, geoDB); err != nil {
			return res, err
		}
		out("  geoip    %s: %d networks from %s (documentation ranges mapped to real cities)", geoDB, len(table.City), cfg.Table)
	} else {
		f, err := os.Open(cfg.Table)
		if err == nil {
			table, err = mmdb.ParseTable(f)
			f.Close()
		}
		if err != nil {
			return res, fmt.Errorf("reading the GeoIP table for the client addresses: %w", err)
		}
		out("  geoip    %s (GEOIP_DB); note: the demo's clients use documentation ranges, which a real database does not place", geoDB)
	}
	srcs := sources(table)

	// Kafka.
	brokers := cfg.KafkaBrokers
	if brokers == "" {
		addrFile := filepath.Join(cfg.WorkDir, "devkafka.addr")
		p, err := start("devkafka", filepath.Join(cfg.BinDir, "devkafka"),
			[]string{"--addr-file", addrFile, "--topics", topic, "--partitions", "3"}, nil, logDir)
		if err != nil {
			return res, err
		}
		st.add(p)
		if err := p.waitFor(ctx, "broker address", 20*time.Second, func() error {
			b, err := os.ReadFile(addrFile)
			if err != nil {
				return err
			}
			brokers = strings.TrimSpace(string(b))
			return nil
		}); err != nil {
			return res, interrupted(err)
		}
		out("  kafka    %s (bin/devkafka: in-process kfake broker, topic %s)", brokers, topic)
	} else {
		out("  kafka    %s (KAFKA_BROKERS)", brokers)
	}

	// App.
	listen, err := freePort()
	if err != nil {
		return res, err
	}
	admin, err := freePort()
	if err != nil {
		return res, err
	}
	appArgs := []string{
		"--listen", listen, "--admin", admin,
		"--proxy-protocol", "trusted", "--trusted-proxies", "127.0.0.1/32",
		"--geoip-db", geoDB,
		"--kafka-brokers", brokers, "--kafka-linger", "50ms",
		"--spool-dir", filepath.Join(cfg.WorkDir, "spool"),
	}
	if cfg.KafkaBrokers != "" {
		appArgs = append(appArgs, "--kafka-create-topic", "--kafka-partitions", "3", "--kafka-replication-factor", "1")
	}
	app, err := start("app", filepath.Join(cfg.BinDir, "app"), appArgs, nil, logDir)
	if err != nil {
		return res, err
	}
	st.add(app)
	if err := app.waitFor(ctx, "readiness", 30*time.Second, httpOK("http://"+admin+"/readyz")); err != nil {
		return res, interrupted(err)
	}
	out("  app      %s (PROXY protocol trusted from 127.0.0.1/32 only), admin http://%s/metrics", listen, admin)

	// Ingest. With OPENSEARCH_URL it indexes there (and imports the
	// dashboards into DASHBOARDS_URL); without it, it indexes nothing and
	// serves its own view of what it consumed (issue 9).
	var ingestUI, ingestAdmin string
	var countIndexed func(context.Context) (int64, error)
	indexWhere := ""
	ingestBin := filepath.Join(cfg.BinDir, "ingest")
	if _, err := os.Stat(ingestBin); err != nil {
		out("  ingest   NOT RUN: %s is missing (cmd/ingest not built yet): no indexing, no heat map", ingestBin)
	} else {
		ui := cfg.UI
		if strings.HasSuffix(ui, ":0") {
			if ui, err = freePort(); err != nil {
				return res, err
			}
		} else if !portFree(ui) {
			if ui, err = freePort(); err != nil {
				return res, err
			}
			out("  (%s is busy: the heat map goes to %s)", cfg.UI, ui)
		}
		admin, err := freePort()
		if err != nil {
			return res, err
		}
		args := []string{"--kafka-brokers", brokers, "--ui", ui, "--admin", admin, "--flush-interval", "200ms"}
		var env []string
		if osURL := cfg.OpenSearchURL; osURL != "" {
			args = append(args, "--opensearch-url", osURL)
			if cfg.DashboardsURL != "" {
				args = append(args, "--dashboards-url", cfg.DashboardsURL)
			}
			countIndexed = func(ctx context.Context) (int64, error) { return openSearchCount(ctx, osURL) }
			indexWhere = "OpenSearch " + redact(osURL)
		} else {
			// ingest reads INGEST_<FLAG> variables too: one left in the
			// environment must not make it index where the demo does not look.
			env = []string{"INGEST_OPENSEARCH_URL=", "INGEST_DASHBOARDS_URL="}
		}
		ing, err := start("ingest", ingestBin, args, env, logDir)
		if err != nil {
			return res, err
		}
		st.add(ing)
		if err := ing.waitFor(ctx, "heat-map page", 60*time.Second, httpOK("http://"+ui+"/api/heatmap")); err != nil {
			if ctx.Err() != nil {
				return res, interrupted(err)
			}
			out("  ingest   NOT RUNNING: %v", err)
			_ = ing.stop(5 * time.Second)
			countIndexed = nil
		} else {
			ingestUI, ingestAdmin = "http://"+ui+"/", admin
			if countIndexed != nil {
				out("  ingest   indexing into the %s; heat map %s", indexWhere, ingestUI)
				if cfg.DashboardsURL != "" {
					out("           dashboards imported into %s", cfg.DashboardsURL)
				}
			} else {
				out("  ingest   consuming into its in-memory heat map %s, nothing indexed (set OPENSEARCH_URL to index into OpenSearch)", ingestUI)
			}
		}
	}

	// Baselines: an external broker or OpenSearch may already hold events.
	before := int64(-1)
	if n, err := topicRecords(ctx, brokers); err == nil {
		before = n
	}
	indexedBefore := int64(-1)
	if countIndexed != nil {
		if n, err := countIndexed(ctx); err == nil {
			indexedBefore = n
		}
	}
	var heatBefore heatmap.Totals
	if ingestUI != "" {
		if s, err := fetchHeatmap(ctx, ingestUI); err == nil {
			heatBefore = s.Totals
		}
	}
	var ingestBefore ingestCounts
	ingestBefore.Consumed = -1
	if ingestAdmin != "" {
		if c, err := ingestMetrics(ctx, ingestAdmin); err == nil {
			ingestBefore = c
		}
	}

	// Traffic.
	names := map[string]string{}
	for _, e := range table.City {
		names[e.CountryISO] = e.CountryName
	}
	res = result{Clients: len(srcs), Countries: len(names), Tally: &tally{}, Produced: -1, Indexed: -1, Consumed: -1, HeatmapEvents: -1, Names: names, Indexing: countIndexed != nil}
	out("\ntraffic: %d connections with PROXY v2 headers claiming %d client addresses in %d countries, then %d spoof attempts from untrusted %s ...",
		cfg.Count, len(srcs), len(names), cfg.Spoofs, spoofSource)
	t0 := time.Now()
	if err := traffic(ctx, listen, srcs, cfg.Count, cfg.Concurrency, res.Tally); err != nil {
		return res, interrupted(err)
	}
	if err := spoofs(ctx, listen, srcs, cfg.Spoofs, res.Tally); err != nil {
		return res, interrupted(err)
	}
	if ctx.Err() != nil {
		return res, interrupted(nil)
	}
	out("traffic done in %s", time.Since(t0).Round(time.Millisecond))

	// Wait for the events to go through Kafka and ingest.
	want := int64(res.Tally.Served + res.Tally.Redirect + res.Tally.Denied + res.Tally.Refused)
	deadline := time.Now().Add(cfg.Wait)
	for {
		if n, err := topicRecords(ctx, brokers); err == nil && before >= 0 {
			res.Produced = n - before
		}
		if countIndexed != nil && indexedBefore >= 0 {
			if n, err := countIndexed(ctx); err == nil {
				res.Indexed = n - indexedBefore
				res.IndexedWhere = indexWhere
			}
		}
		if ingestUI != "" {
			if s, err := fetchHeatmap(ctx, ingestUI); err == nil {
				res.HeatmapEvents = s.Totals.Events - heatBefore.Events
				res.Heatmap, res.HeatmapBefore = &s, heatBefore
			}
		}
		if ingestBefore.Consumed >= 0 {
			if c, err := ingestMetrics(ctx, ingestAdmin); err == nil {
				res.Consumed = c.Consumed - ingestBefore.Consumed
				res.DeadLettered = c.DeadLettered - ingestBefore.DeadLettered
			}
		}
		done := res.Produced >= want &&
			(countIndexed == nil || res.Indexed >= res.Produced) &&
			(ingestBefore.Consumed < 0 || res.Consumed >= res.Produced) &&
			(ingestUI == "" || res.HeatmapEvents >= res.Produced)
		if done || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if ctx.Err() != nil {
		return res, interrupted(nil)
	}
	res.AppActions, res.AppSpoofs, _ = appMetrics(ctx, admin)

	printSummary(stdout, cfg, res, ingestUI, logDir)
	problems := res.problems(cfg.Spoofs)

	if cfg.Keep {
		out("\n--keep: everything keeps running; Ctrl-C stops it.")
		select {
		case <-ctx.Done():
			out("stopping everything the demo started")
		case <-anyExited(st.procs):
			out("a program exited; stopping the rest (logs in %s/)", logDir)
		}
	}
	if len(problems) > 0 {
		return res, fmt.Errorf("%d problems (see the summary)", len(problems))
	}
	return res, nil
}

// anyExited returns a channel closed when any of ps exits. Its goroutines
// end when the processes do (the demo stops them all before returning).
func anyExited(ps []*proc) <-chan struct{} {
	ch := make(chan struct{})
	var once sync.Once
	for _, p := range ps {
		go func() {
			<-p.done
			once.Do(func() { close(ch) })
		}()
	}
	return ch
}

// prepareWorkDir creates dir, takes its lock (one demo at a time: they
// would share the spool) and clears the previous run's files.
func prepareWorkDir(dir string) (unlock func(), err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating %s: %w", dir, err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("locking %s: %w", dir, err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("another demo is running in %s (stop it with Ctrl-C first): %w", dir, err)
	}
	for _, name := range []string{"spool", "logs", "geoip", "devkafka.addr"} {
		if err := os.RemoveAll(filepath.Join(dir, name)); err != nil {
			lock.Close()
			return nil, fmt.Errorf("clearing %s: %w", dir, err)
		}
	}
	for _, name := range []string{"spool", "logs", "geoip"} {
		if err := os.MkdirAll(filepath.Join(dir, name), 0o755); err != nil {
			lock.Close()
			return nil, fmt.Errorf("creating %s: %w", dir, err)
		}
	}
	return func() { lock.Close() }, nil
}

// topicRecords returns the number of records in the topic (the sum over
// partitions of last - first offset).
func topicRecords(ctx context.Context, brokers string) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	seed := strings.Split(brokers, ",")[0]
	conn, err := kafkago.DialContext(ctx, "tcp", seed)
	if err != nil {
		return 0, fmt.Errorf("counting records: %w", err)
	}
	parts, err := conn.ReadPartitions(topic)
	conn.Close()
	if err != nil {
		return 0, fmt.Errorf("counting records: %w", err)
	}
	var n int64
	for _, p := range parts {
		lc, err := kafkago.DialLeader(ctx, "tcp", seed, topic, p.ID)
		if err != nil {
			return 0, fmt.Errorf("counting records of partition %d: %w", p.ID, err)
		}
		first, last, err := lc.ReadOffsets()
		lc.Close()
		if err != nil {
			return 0, fmt.Errorf("counting records of partition %d: %w", p.ID, err)
		}
		n += last - first
	}
	return n, nil
}

// indexPattern matches ingest's daily indices (its --index-prefix default).
const indexPattern = "conn-events-*"

// openSearchCount returns the number of documents in indexPattern.
func openSearchCount(ctx context.Context, base string) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(base, "/")+"/"+indexPattern+"/_count?allow_no_indices=true", nil)
	if err != nil {
		return 0, fmt.Errorf("counting documents: %w", err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("counting documents: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("counting documents: %s", res.Status)
	}
	var c struct {
		Count int64 `json:"count"`
	}
	if err := json.NewDecoder(io.LimitReader(res.Body, 1<<20)).Decode(&c); err != nil {
		return 0, fmt.Errorf("counting documents: %w", err)
	}
	return c.Count, nil
}

// redact removes credentials from a URL for printing.
func redact(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "(unparsable URL)"
	}
	return p.Redacted()
}

// fetchHeatmap reads ingest's /api/heatmap.
func fetchHeatmap(ctx context.Context, ui string) (heatmap.Snapshot, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ui+"api/heatmap", nil)
	if err != nil {
		return heatmap.Snapshot{}, err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return heatmap.Snapshot{}, fmt.Errorf("reading the heat map: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return heatmap.Snapshot{}, fmt.Errorf("reading the heat map: %s", res.Status)
	}
	var s heatmap.Snapshot
	if err := json.NewDecoder(io.LimitReader(res.Body, 16<<20)).Decode(&s); err != nil {
		return heatmap.Snapshot{}, fmt.Errorf("decoding the heat map: %w", err)
	}
	return s, nil
}

// scrape reads the Prometheus text exposition at http://admin/metrics.
func scrape(ctx context.Context, admin string) (map[string]*dto.MetricFamily, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/metrics", nil)
	if err != nil {
		return nil, fmt.Errorf("reading metrics: %w", err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("reading metrics: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("reading metrics from %s: %s", admin, res.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(io.LimitReader(res.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("parsing metrics from %s: %w", admin, err)
	}
	return fams, nil
}

// counters returns the values of the counter family name by the value of
// label (summed over the other labels), and their total.
func counters(fams map[string]*dto.MetricFamily, name, label string) (by map[string]int, total int64) {
	by = map[string]int{}
	f := fams[name]
	if f == nil {
		return by, 0
	}
	for _, m := range f.GetMetric() {
		v := int64(m.GetCounter().GetValue())
		total += v
		if label == "" {
			continue
		}
		for _, lp := range m.GetLabel() {
			if lp.GetName() == label {
				by[lp.GetValue()] += int(v)
			}
		}
	}
	return by, total
}

// appMetrics reads the app's connection counters from its /metrics.
func appMetrics(ctx context.Context, admin string) (actions map[string]int, spoofs int, err error) {
	fams, err := scrape(ctx, admin)
	if err != nil {
		return nil, 0, err
	}
	actions, _ = counters(fams, "originlens_connections_total", "action")
	kinds, _ := counters(fams, "originlens_proxy_header_errors_total", "kind")
	return actions, kinds["spoof"], nil
}

// ingestCounts are ingest's counters the summary adds up.
type ingestCounts struct {
	Consumed     int64 // ingest_messages_fetched_total
	DeadLettered int64 // ingest_docs_dead_lettered_total, all reasons
}

// ingestMetrics reads ingest's counters from its /metrics.
func ingestMetrics(ctx context.Context, admin string) (ingestCounts, error) {
	fams, err := scrape(ctx, admin)
	if err != nil {
		return ingestCounts{}, err
	}
	if fams["ingest_messages_fetched_total"] == nil {
		return ingestCounts{}, fmt.Errorf("ingest's metrics at %s lack ingest_messages_fetched_total", admin)
	}
	var c ingestCounts
	_, c.Consumed = counters(fams, "ingest_messages_fetched_total", "")
	_, c.DeadLettered = counters(fams, "ingest_docs_dead_lettered_total", "")
	return c, nil
}
