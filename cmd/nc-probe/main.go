// Command nc-probe is the blog's netcat test as a tool: it connects to the
// app (through Global Accelerator, an NLB, a proxy...), speaks first, reads
// the report of what the server saw, and exits 0 when the server saw the
// client's own address, 1 when it saw another one, 2 on a connection or
// protocol failure (or bad flags), 3 when it cannot tell (behind NAT without
// --expect-ip). It measures connect, report and echo times on the way.
//
//	nc-probe [flags] HOST:PORT
//	nc-probe listen [flags] [ADDR]
//
// "nc-probe listen" is the other end: it prints the source (and PROXY
// header) of every connection and answers in the app's report format.
// Every setting also reads NC_PROBE_<FLAG> from the environment (for
// example NC_PROBE_EXPECT_IP), and the target NC_PROBE_TARGET; --version,
// --help and the short aliases (-n, -c, -i) read the command line only
// (help.go says why per-run settings keep their variables). A bad value
// exits 2 with one line naming the flag, the value and a good one.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// version is set at build time (-ldflags -X main.version=...).
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg, err := parseArgs(os.Args[1:], os.Getenv, os.Stdout)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "nc-probe: "+err.Error())
		os.Exit(exitFailure)
	}
	os.Exit(run(ctx, cfg, os.Stdout, os.Stderr))
}
