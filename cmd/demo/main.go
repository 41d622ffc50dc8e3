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
//	bin/demo --help                    # every flag, by topic, with its variable
//	GEOIP_DB=/path/GeoLite2-City.mmdb make demo
//	KAFKA_BROKERS=127.0.0.1:9092 OPENSEARCH_URL=http://127.0.0.1:9200 \
//	  DASHBOARDS_URL=http://127.0.0.1:5601 make demo   # deploy/compose
//
// Every flag also reads DEMO_<NAME> (DEMO_KEEP=1 for --keep), and
// --geoip-db, --kafka-brokers, --opensearch-url and --dashboards-url also
// the documented GEOIP_DB, KAFKA_BROKERS, OPENSEARCH_URL and DASHBOARDS_URL
// (DEMO_ first). A bad value exits 2 with one line naming the flag, the
// value and a good one.
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
	"syscall"
	"time"

	"github.com/originlens/originlens/internal/flagenv"
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
	cfg, err := parseFlags(os.Args[1:], os.Getenv, os.Stdout)
	if errors.Is(err, flag.ErrHelp) {
		return // --help or --version
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

// parseFlags parses args (without the program name) and falls back to the
// environment (getenv; empty is unset) for flags not given: DEMO_<NAME>,
// and for the four settings shared with deploy/compose also the documented
// GEOIP_DB, KAFKA_BROKERS, OPENSEARCH_URL and DASHBOARDS_URL. --help and
// --version print to out and return flag.ErrHelp.
func parseFlags(args []string, getenv func(string) string, out io.Writer) (Config, error) {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfg := Config{}
	fs.StringVar(&cfg.BinDir, "bin", "bin", "directory of the built programs")
	fs.StringVar(&cfg.WorkDir, "dir", ".demo", "working directory for the database, spool and logs")
	fs.StringVar(&cfg.Table, "table", "deploy/demo/geo-table.tsv", "GeoIP table the demo database is built from")
	fs.StringVar(&cfg.GeoIPDB, "geoip-db", "", "use this City database instead of building one")
	fs.StringVar(&cfg.KafkaBrokers, "kafka-brokers", "", "use these brokers instead of starting bin/devkafka")
	fs.StringVar(&cfg.OpenSearchURL, "opensearch-url", "", "OpenSearch ingest indexes into; empty: nothing is indexed, ingest serves its own view of what it consumed")
	fs.StringVar(&cfg.DashboardsURL, "dashboards-url", "", "OpenSearch Dashboards ingest imports the dashboards into; needs --opensearch-url")
	fs.StringVar(&cfg.UI, "ui", "127.0.0.1:8088", "address of ingest's heat-map page; a free port if busy")
	fs.IntVar(&cfg.Count, "count", 300, "probe connections from simulated clients (1-100000)")
	fs.IntVar(&cfg.Spoofs, "spoofs", 20, "spoof attempts from an untrusted source (0-10000)")
	fs.IntVar(&cfg.Concurrency, "concurrency", 8, "probes in flight (1-256)")
	fs.DurationVar(&cfg.Wait, "wait", 60*time.Second, "how long to wait for ingest to catch up")
	fs.BoolVar(&cfg.Keep, "keep", false, "keep everything running after the summary until Ctrl-C")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := command.Parse(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			command.Help(out, fs)
		}
		return Config{}, err
	}
	if *showVersion {
		fmt.Fprintln(out, "demo", version)
		return Config{}, flag.ErrHelp
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected argument %q (flags only; see --help)", fs.Arg(0))
	}
	if err := command.Apply(fs, func(k string) (string, bool) { v := getenv(k); return v, v != "" }); err != nil {
		return Config{}, err
	}
	if cfg.DashboardsURL != "" && cfg.OpenSearchURL == "" {
		return Config{}, fmt.Errorf("--dashboards-url %s needs --opensearch-url (DEMO_OPENSEARCH_URL or OPENSEARCH_URL), e.g. --opensearch-url http://127.0.0.1:9200: the dashboards show the indexed events", flagenv.Quote(cfg.DashboardsURL))
	}
	for _, c := range []struct {
		name   string
		n      int
		lo, hi int
	}{{"count", cfg.Count, 1, 100000}, {"spoofs", cfg.Spoofs, 0, 10000}, {"concurrency", cfg.Concurrency, 1, 256}} {
		if c.n < c.lo || c.n > c.hi {
			return Config{}, command.Invalid(fs, c.name, fmt.Errorf("want %d to %d", c.lo, c.hi))
		}
	}
	if cfg.Wait <= 0 {
		return Config{}, command.Invalid(fs, "wait", errors.New("must be positive"))
	}
	return cfg, nil
}
