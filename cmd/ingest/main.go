// Command ingest consumes connection events from Kafka and bulk-indexes
// them into OpenSearch daily indices, nothing lost and nothing doubled:
// offsets are committed only after OpenSearch accepted every message below
// them, documents are created with _id = event.id (a redelivery is a 409),
// failed items are retried one by one, and what OpenSearch can never accept
// goes to a dead-letter topic. It installs its index template, ISM retention
// policy and Dashboards saved objects before the first write, serves
// /metrics, /healthz and /readyz on --admin and the live heat map on --ui.
//
//	ingest [flags]         consume until SIGTERM
//	ingest setup [flags]   install template, policy and dashboards, then exit
//
// Every flag also reads INGEST_<NAME> (not --version). A bad flag exits 2
// before anything connects; SIGTERM and SIGINT finish (or, after
// --shutdown-grace, abandon) the in-flight bulk requests, commit what was
// acknowledged and exit 0; a second one exits at once, status 1. SIGHUP
// (sent to every service by some reload scripts) is logged and ignored:
// ingest has nothing to reload. All three are handled from main's first
// line to the exit: none terminates the process by its default action.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/originlens/originlens/internal/signals"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	sig := signals.Catch("ingest") // first: no signal may kill the process from here on
	cfg, err := parseConfig(os.Args[1:], os.LookupEnv, os.Stdout)
	if errors.Is(err, errExit) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "ingest:", err)
		os.Exit(2)
	}
	cfg.hup = sig.Reload()
	if err := run(sig.Stopping(), cfg, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "ingest:", err)
		os.Exit(1)
	}
}
