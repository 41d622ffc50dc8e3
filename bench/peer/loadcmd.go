package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"time"
)

// runLoadCmd is the "load" subcommand: the benchmark's generator alone,
// for a fixed number of connections against a server someone else started
// (under strace -c -f, valgrind --tool=callgrind or perf stat), so that
// per-connection costs can be counted rather than timed:
//
//	bench-peer load -target 127.0.0.1:8080 -n 5000 -lines 2
//
// It prints the connections answered and failed and exits 1 if any failed.
func runLoadCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench-peer load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	target := fs.String("target", "", "server address host:port (required)")
	n := fs.Int64("n", 5000, "connections to make")
	conc := fs.Int("concurrency", 32, "connections in flight")
	lines := fs.Int("lines", appReplyLines, "reply lines to read before closing (app 2, nginx 1)")
	timeout := fs.Duration("timeout", 5*time.Second, "per-connection deadline")
	limit := fs.Duration("max-time", 2*time.Minute, "stop after this long even if -n is not reached")
	sources := fs.Int("sources", 32, "loopback source addresses to dial from (see bench-peer -sources)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	addr, err := netip.ParseAddrPort(*target)
	switch {
	case err != nil:
		return fmt.Errorf("-target %q: %w (example: -target 127.0.0.1:8080)", *target, err)
	case *n < 1 || *conc < 1 || *conc > 4096 || *lines < 1 || *sources < 1 || *sources > 254:
		return errors.New("-n, -lines must be positive, -concurrency 1..4096, -sources 1..254")
	}
	dialSources.Store(int64(*sources))
	clients, err := newClients(1024, benchNets, headerDst)
	if err != nil {
		return err
	}
	r := runLoad(ctx, loadConfig{
		Target: addr, Clients: clients, Concurrency: *conc, Duration: *limit,
		MaxConns: *n, Timeout: *timeout, CheckEvery: 100, ReplyLines: *lines,
	})
	fmt.Fprintf(stdout, "%d answered, %d failed in %s\n", r.OK, r.Failed, r.Wall.Round(time.Millisecond))
	for _, e := range r.Errs {
		fmt.Fprintln(stdout, "  ", e)
	}
	if r.Failed > 0 {
		return fmt.Errorf("%d connections failed", r.Failed)
	}
	return nil
}
