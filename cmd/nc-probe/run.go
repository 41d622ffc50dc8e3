package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/originlens/originlens/internal/origin"
	"github.com/originlens/originlens/internal/probe"
	"github.com/originlens/originlens/internal/probe/listener"
)

// run executes cfg and returns the exit code. The text or JSON result goes
// to stdout, warnings and the one-line explanation of a JSON run to
// stderr. Cancelling ctx (Ctrl-C) stops a probe run and prints what was
// measured so far, or stops a listener.
func run(ctx context.Context, cfg config, stdout, stderr io.Writer) int {
	// What a server (or, for listen, a client) sent reaches the terminal
	// escaped; the progress line alone writes its own escapes.
	term := stdout
	stdout, stderr = escaper{stdout}, escaper{stderr}
	if cfg.listen {
		return runListen(ctx, cfg, stdout, stderr)
	}
	if cfg.udp {
		return runUDP(ctx, cfg, stdout, stderr)
	}
	if cfg.probe.Compare != "" {
		fmt.Fprintln(stderr, compareWarning)
	}
	pcfg := cfg.probe
	var prog *progress
	switch {
	case cfg.csv:
		cw := newCSVWriter(stdout)
		pcfg.OnAttempt = cw.row
	case cfg.watch && !cfg.json:
		wl := &watchLines{w: stdout}
		pcfg.OnAttempt = wl.write
	case !cfg.json && isTerminal(term) && (pcfg.Count != 1 || pcfg.Compare != "" || len(pcfg.Families) > 0):
		prog = &progress{w: term, total: pcfg.Count * targetsOf(pcfg)}
		pcfg.OnAttempt = prog.update
	}
	res, err := probe.Run(ctx, pcfg)
	prog.clear()
	interrupted := err != nil && ctx.Err() != nil
	if err != nil && !interrupted {
		fmt.Fprintln(stderr, "nc-probe: "+err.Error())
		return exitFailure
	}
	code := exitCode(res.Verdict())
	switch {
	case cfg.json:
		if err := writeJSON(stdout, cfg, res, code, interrupted); err != nil {
			fmt.Fprintln(stderr, "nc-probe: "+err.Error())
			return exitFailure
		}
	case cfg.csv:
		if cfg.watch {
			writeWatchSummary(stderr, res)
		}
	case cfg.watch:
		writeWatchSummary(stdout, res)
	default:
		writeText(stdout, cfg, res, interrupted)
	}
	writeDiagnoses(stderr, res)
	return code
}

// writeDiagnoses prints each target's diagnosis sentence, one line each,
// prefixed with the path when there are several.
func writeDiagnoses(w io.Writer, res probe.Result) {
	for i, t := range res.Targets {
		fmt.Fprintln(w, pathLabel(res, i)+t.Advice)
	}
}

// pathLabel names target i when a run has several ("A host:port: ",
// "IPv6 [::1]:80: "), "" otherwise.
func pathLabel(res probe.Result, i int) string {
	if len(res.Targets) < 2 {
		return ""
	}
	t := res.Targets[i]
	if t.Family != 0 {
		addr := t.Target
		if t.Addr.IsValid() {
			addr = t.Addr.String()
		}
		return fmt.Sprintf("IPv%d %s: ", t.Family, addr)
	}
	return fmt.Sprintf("%c %s: ", 'A'+i, t.Target)
}

const compareWarning = "warning: probing an endpoint directly while it is also behind Global Accelerator can collide with GA's own connections " +
	"(same source IP and port, see the reference note on port overrides); probe the direct path on another listener port or use GA port overrides"

func targetsOf(c probe.Config) int {
	if c.Compare != "" {
		return 2
	}
	return max(1, len(c.Families))
}

func exitCode(v probe.Verdict) int {
	switch v {
	case probe.Preserved:
		return exitPreserved
	case probe.NotPreserved:
		return exitNotPreserved
	case probe.Unknown:
		return exitUnknown
	}
	return exitFailure
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// progress keeps one live status line on a terminal, redrawn at most every
// 100 ms. Its methods are called from probe.Run's goroutine and then from
// run, never concurrently; a nil *progress does nothing.
type progress struct {
	w            io.Writer
	total        int // 0: unbounded
	done, failed int
	last         time.Duration
	drawn        time.Time
}

func (p *progress) update(a probe.Attempt) {
	p.done++
	if a.Err != nil {
		p.failed++
	} else {
		p.last = a.Timings.Report
	}
	if time.Since(p.drawn) < 100*time.Millisecond && p.done != p.total {
		return
	}
	p.drawn = time.Now()
	total := "∞"
	if p.total > 0 {
		total = fmt.Sprint(p.total)
	}
	fmt.Fprintf(p.w, "\r\033[K%d/%s attempts  %d failed  last report %s ms  (Ctrl-C stops with a summary)", p.done, total, p.failed, fmtMS(p.last))
}

func (p *progress) clear() {
	if p != nil && !p.drawn.IsZero() {
		fmt.Fprint(p.w, "\r\033[K")
	}
}

// runListen serves nc-probe listen until ctx is done.
func runListen(ctx context.Context, cfg config, stdout, stderr io.Writer) int {
	res, err := origin.NewResolver(cfg.origin)
	if err != nil {
		fmt.Fprintln(stderr, "nc-probe: "+err.Error())
		return exitFailure
	}
	ln, err := net.Listen("tcp", cfg.listenAddr)
	if err != nil {
		fmt.Fprintln(stderr, "nc-probe: "+err.Error())
		return exitFailure
	}
	out := &lockedWriter{w: stdout}
	mode := cfg.origin.Mode.String()
	if len(cfg.origin.Trusted) > 0 {
		mode += fmt.Sprintf(", trusted %v", cfg.origin.Trusted)
	}
	fmt.Fprintf(out, "nc-probe listening on %s (proxy-protocol %s); one line per connection, Ctrl-C stops\n", ln.Addr(), mode)
	srv := listener.New(listener.Config{Resolver: res, Out: out, IdleTimeout: cfg.idle})
	if err := srv.Serve(ctx, ln); err != nil {
		fmt.Fprintln(stderr, "nc-probe: "+err.Error())
		return exitFailure
	}
	return 0
}

// lockedWriter serialises writes from the listener and run.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
