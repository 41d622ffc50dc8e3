// Command demo runs the whole originlens pipeline on loopback and prints
// what happened: an embedded Kafka broker (bin/devkafka), bin/app in trusted
// PROXY-protocol mode with a GeoIP database built from a table of
// documentation ranges mapped to real cities, bin/ingest with its live heat
// map, and a traffic run of probes claiming clients from many countries,
// plus spoof attempts that the app must refuse. Without OPENSEARCH_URL
// ingest indexes nothing and serves its own view of what it consumed; with
// it, ingest indexes there (and imports the dashboards into DASHBOARDS_URL).
//
//	make demo                          # or: ./scripts/demo.sh
//	make demo ARGS=--keep              # keep everything running (also DEMO_KEEP=1)
//	GEOIP_DB=/path/GeoLite2-City.mmdb make demo
//	KAFKA_BROKERS=127.0.0.1:9092 OPENSEARCH_URL=http://127.0.0.1:9200 \
//	  DASHBOARDS_URL=http://127.0.0.1:5601 make demo   # deploy/compose
//
// Everything it starts listens on 127.0.0.1 on free ports; its files
// (database, spool, logs) live in .demo/. It stops everything on Ctrl-C or
// at the end, so it can run again at once.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

var version = "dev"

// Config is the demo's configuration.
type Config struct {
	BinDir        string        // where bin/app, bin/ingest, bin/devkafka are
	WorkDir       string        // .demo: database, spool, logs
	Table         string        // the GeoIP table (deploy/demo/geo-table.tsv)
	GeoIPDB       string        // a real City database instead of the table
	KafkaBrokers  string        // external Kafka; empty: start bin/devkafka
	OpenSearchURL string        // passed to ingest; empty: nothing indexed, ingest's in-memory view
	DashboardsURL string        // passed to ingest; only with OpenSearchURL
	UI            string        // ingest's --ui address; busy: a free port
	Count         int           // probe connections from the simulated clients
	Spoofs        int           // spoof attempts from an untrusted source
	Concurrency   int           // probes in flight
	Keep          bool          // keep running after the summary until Ctrl-C
	Wait          time.Duration // how long to wait for ingest to catch up
}

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Getenv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string, getenv func(string) string, stderr io.Writer) (Config, error) {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := Config{}
	fs.StringVar(&cfg.BinDir, "bin", or(getenv("DEMO_BIN"), "bin"), "directory of the built programs (env DEMO_BIN)")
	fs.StringVar(&cfg.WorkDir, "dir", or(getenv("DEMO_DIR"), ".demo"), "working directory for the database, spool and logs (env DEMO_DIR)")
	fs.StringVar(&cfg.Table, "table", or(getenv("DEMO_TABLE"), "deploy/demo/geo-table.tsv"), "GeoIP table the demo database is built from (env DEMO_TABLE)")
	fs.StringVar(&cfg.GeoIPDB, "geoip-db", getenv("GEOIP_DB"), "use this City database instead of building one (env GEOIP_DB)")
	fs.StringVar(&cfg.KafkaBrokers, "kafka-brokers", getenv("KAFKA_BROKERS"), "use these brokers instead of starting bin/devkafka (env KAFKA_BROKERS)")
	fs.StringVar(&cfg.OpenSearchURL, "opensearch-url", getenv("OPENSEARCH_URL"), "OpenSearch ingest indexes into (env OPENSEARCH_URL); empty: nothing is indexed, ingest serves its own view of what it consumed")
	fs.StringVar(&cfg.DashboardsURL, "dashboards-url", getenv("DASHBOARDS_URL"), "OpenSearch Dashboards ingest imports the dashboards into; needs --opensearch-url (env DASHBOARDS_URL)")
	fs.StringVar(&cfg.UI, "ui", or(getenv("DEMO_UI"), "127.0.0.1:8088"), "address of ingest's heat-map page; a free port if busy (env DEMO_UI)")
	count := fs.String("count", or(getenv("DEMO_COUNT"), "300"), "probe connections from simulated clients (env DEMO_COUNT)")
	spoofs := fs.String("spoofs", or(getenv("DEMO_SPOOFS"), "20"), "spoof attempts from an untrusted source (env DEMO_SPOOFS)")
	conc := fs.String("concurrency", or(getenv("DEMO_CONCURRENCY"), "8"), "probes in flight (env DEMO_CONCURRENCY)")
	wait := fs.String("wait", or(getenv("DEMO_WAIT"), "60s"), "how long to wait for ingest to catch up (env DEMO_WAIT)")
	fs.BoolVar(&cfg.Keep, "keep", isTrue(getenv("DEMO_KEEP")), "keep everything running after the summary until Ctrl-C (env DEMO_KEEP=1)")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if *showVersion {
		fmt.Fprintln(stderr, "demo", version)
		return Config{}, flag.ErrHelp
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if cfg.DashboardsURL != "" && cfg.OpenSearchURL == "" {
		return Config{}, fmt.Errorf("DASHBOARDS_URL (--dashboards-url) needs OPENSEARCH_URL (--opensearch-url): the dashboards show the indexed events")
	}
	var err error
	if cfg.Count, err = intFlag("count", *count, 1, 100000); err != nil {
		return Config{}, err
	}
	if cfg.Spoofs, err = intFlag("spoofs", *spoofs, 0, 10000); err != nil {
		return Config{}, err
	}
	if cfg.Concurrency, err = intFlag("concurrency", *conc, 1, 256); err != nil {
		return Config{}, err
	}
	if cfg.Wait, err = time.ParseDuration(*wait); err != nil || cfg.Wait <= 0 {
		return Config{}, fmt.Errorf("invalid --wait %q: want a positive duration such as 60s", *wait)
	}
	return cfg, nil
}

func intFlag(name, v string, lo, hi int) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return 0, fmt.Errorf("invalid --%s %q: want %d..%d", name, v, lo, hi)
	}
	return n, nil
}

func or(v, def string) string {
	if v != "" {
		return v
	}
	return def
}

func isTrue(v string) bool {
	switch strings.ToLower(v) {
	case "1", "true", "yes", "on":
		return true
	}
	return false
}
