// Command app is the originlens TCP backend: it learns each client's true
// address (socket, or PROXY protocol v1/v2 from trusted sources), locates
// it, applies residency and business rules, answers it (a line protocol for
// netcat, HTTP for curl and browsers) and publishes one connection event per
// connection, to Kafka or as JSON lines on stdout.
//
// Every flag but --version also reads an environment variable APP_<NAME>
// (see --help).
// Logs go to stderr. A bad flag value exits with status 2 before anything
// listens; other failures exit 1. SIGTERM and SIGINT stop accepting, let
// open connections finish within --drain-timeout, flush the events and exit
// 0 (a second one exits at once, status 1). SIGHUP reloads --policy,
// keeping the current rules when the file is bad; a SIGHUP that arrives
// while the app starts is applied once it serves, one during the drain is
// logged and ignored. All three signals are handled from the first line of
// main to the exit: none of them terminates the process by its default
// action.
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
	sig := signals.Catch("app") // first: no signal may kill the process from here on
	cfg, err := parseConfig(os.Args[1:], os.LookupEnv, os.Stdout)
	if errors.Is(err, errExit) {
		os.Exit(0) // --help or --version
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "app:", err)
		os.Exit(2)
	}
	cfg.reload = sig.Reload()
	if err := run(sig.Stopping(), cfg, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "app:", err)
		if errors.As(err, new(*configError)) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}
