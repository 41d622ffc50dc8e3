package probe

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/originlens/originlens/internal/report"
)

// Config configures [Run].
type Config struct {
	// Target is the host:port to probe.
	Target string
	// Compare, when not empty, is a second host:port probed interleaved with
	// Target (A, B, A, B, ...) with the same options.
	Compare string
	// Count is the number of attempts per target; 0 runs until ctx is done.
	Count int
	// Concurrency is the number of attempts in flight at once (default 1).
	// Samples are recorded in completion order, so with more than one
	// attempt in flight "consecutive" (for jitter) means consecutive to
	// finish.
	Concurrency int
	// Interval is the time between the starts of consecutive rounds (one
	// attempt per target); 0 starts each as soon as a worker is free.
	Interval time.Duration
	// Options apply to every attempt.
	Options Options
	// ProxySources, when not empty, makes round r claim ProxySources[r %
	// len] as the client address (Options.Proxy gives the version and the
	// destination; its Src is replaced). The demo simulates clients from
	// many countries this way in one run.
	ProxySources []netip.AddrPort
	// Expect, when valid, is the client address the server should see.
	// Otherwise it is the PROXY header's source when Options.Proxy is set,
	// else each attempt's local socket address.
	Expect netip.Addr
	// OnAttempt, when not nil, is called once per finished attempt, from
	// Run's own goroutine, one call at a time and in completion order. It
	// must not block for long: it delays the collection of results.
	OnAttempt func(Attempt)
}

// Validate reports bad configuration before anything is dialed.
func (c Config) Validate() error {
	if c.Target == "" {
		return errors.New("probe: no target")
	}
	if c.Count < 0 {
		return fmt.Errorf("probe: count must not be negative, got %d", c.Count)
	}
	if c.Concurrency < 0 {
		return fmt.Errorf("probe: concurrency must not be negative, got %d", c.Concurrency)
	}
	if c.Interval < 0 {
		return fmt.Errorf("probe: interval must not be negative, got %v", c.Interval)
	}
	if len(c.ProxySources) > 0 && c.Options.Proxy == nil {
		return errors.New("probe: proxy sources need a PROXY header version (Options.Proxy)")
	}
	opts := c.Options
	for _, ap := range c.ProxySources {
		if !ap.IsValid() {
			return errors.New("probe: invalid proxy source address")
		}
		p := *opts.Proxy
		p.Src = ap
		opts.Proxy = &p
	}
	return opts.Validate()
}

// expectation returns the fixed expected address and its source; the
// address is invalid for ExpectLocal (it then comes per attempt).
func (c Config) expectation() (netip.Addr, ExpectSource) {
	switch {
	case c.Expect.IsValid():
		return c.Expect.Unmap(), ExpectFlag
	case c.Options.Proxy != nil:
		return c.Options.Proxy.Src.Addr().Unmap(), ExpectProxySrc
	}
	return netip.Addr{}, ExpectLocal
}

// Attempt is one finished attempt.
type Attempt struct {
	Target   string // the host:port probed
	Index    int    // 0 for Config.Target, 1 for Config.Compare
	Seq      int    // the round, from 0
	Report   report.Report
	Timings  Timings
	Err      error          // nil, or an [*Error]
	Saw      netip.AddrPort // the client address in the report, unmapped
	Expected netip.Addr     // the address the server should have seen
	Verdict  Verdict
}

// TargetResult aggregates the attempts against one target. Run fills it
// from its own goroutine; read it once Run has returned.
type TargetResult struct {
	Target   string
	Attempts int // finished attempts, interrupted ones excluded
	Failures int // attempts that ended in an error
	// FailuresByStage counts failures per [Stage].
	FailuresByStage map[Stage]int
	// LastError is the most recent failure, nil when none.
	LastError error
	// Connect, Report and Echo summarise the timings of the attempts that
	// got that far.
	Connect, Report, Echo Summary
	// DNS summarises name lookups (empty when the target is an IP literal).
	DNS Summary
	// EchoSkipped is set when echo lines were asked for and the server's
	// decision made them impossible (not a failure).
	EchoSkipped string
	// Last is the most recent report received.
	Last report.Report
	// Seen lists the distinct client addresses the server reported, in the
	// order first seen.
	Seen []netip.Addr
	// Expected and ExpectedFrom are the expected client address (for
	// ExpectLocal: the local address of the first attempt that connected).
	Expected     netip.Addr
	ExpectedFrom ExpectSource
	// Counts of attempts per verdict.
	Preserved, NotPreserved, Unknown int
	// Verdict: NotPreserved if any attempt was, else Unknown if any was,
	// else Preserved if any was, else NoReport.
	Verdict Verdict

	examples map[Verdict]Attempt // the first attempt per verdict

	connect, report, echo, dns *Recorder
}

// LossPct is the failed attempts in percent.
func (t *TargetResult) LossPct() float64 { return LossPct(t.Failures, t.Attempts) }

// Example returns the first attempt that got the target's verdict: the one
// that shows what the server saw (for NotPreserved, the first attempt
// whose address was replaced). ok is false when no report came.
func (t *TargetResult) Example() (a Attempt, ok bool) {
	a, ok = t.examples[t.Verdict]
	return a, ok
}

// Explain is the one-line explanation of the target's verdict.
func (t *TargetResult) Explain() string {
	a, ok := t.Example()
	if !ok {
		if t.LastError != nil {
			hint := ""
			if StageOf(t.LastError) == StageReport && errors.Is(t.LastError, ErrClosed) {
				hint = " (a server with --proxy-protocol required or trusted closes a connection whose PROXY header is missing or comes from an untrusted address)"
			}
			return fmt.Sprintf("failed: %s: %v%s", t.Target, t.LastError, hint)
		}
		return "failed: " + t.Target + ": no attempt finished"
	}
	s := Explain(t.Verdict, a.Saw.Addr(), a.Expected, t.ExpectedFrom, a.Report[report.KeyPeer])
	if t.Verdict == Preserved && len(t.Seen) > 1 {
		s += fmt.Sprintf(" (and in every attempt: %d distinct client addresses)", len(t.Seen))
	}
	return s
}

func newTargetResult(target string) *TargetResult {
	return &TargetResult{
		Target: target, FailuresByStage: map[Stage]int{}, examples: map[Verdict]Attempt{},
		connect: NewRecorder(), report: NewRecorder(), echo: NewRecorder(), dns: NewRecorder(),
	}
}

func (t *TargetResult) add(a Attempt) {
	t.Attempts++
	if a.Err != nil {
		t.Failures++
		t.FailuresByStage[StageOf(a.Err)]++
		t.LastError = a.Err
	}
	tm := a.Timings
	if tm.DNS > 0 {
		t.dns.Record(tm.DNS)
	}
	if tm.Remote.IsValid() {
		t.connect.Record(tm.Connect)
		if !t.Expected.IsValid() && a.Expected.IsValid() {
			t.Expected = a.Expected
		}
	}
	if a.Report != nil {
		t.report.Record(tm.Report)
		t.Last = a.Report
	}
	for _, d := range tm.Echo {
		t.echo.Record(d)
	}
	if tm.EchoSkipped != "" {
		t.EchoSkipped = tm.EchoSkipped
	}
	if a.Saw.IsValid() {
		if !containsAddr(t.Seen, a.Saw.Addr()) {
			t.Seen = append(t.Seen, a.Saw.Addr())
		}
	}
	if _, ok := t.examples[a.Verdict]; !ok && a.Verdict != NoReport {
		t.examples[a.Verdict] = a
	}
	switch a.Verdict {
	case Preserved:
		t.Preserved++
	case NotPreserved:
		t.NotPreserved++
	case Unknown:
		t.Unknown++
	}
	switch {
	case t.NotPreserved > 0:
		t.Verdict = NotPreserved
	case t.Unknown > 0:
		t.Verdict = Unknown
	case t.Preserved > 0:
		t.Verdict = Preserved
	}
}

// summarize fills Connect, Report and Echo from the recorders.
func (t *TargetResult) summarize() {
	t.Connect, t.Report, t.Echo = t.connect.Summary(), t.report.Summary(), t.echo.Summary()
	t.DNS = t.dns.Summary()
}

func containsAddr(s []netip.Addr, a netip.Addr) bool {
	for _, x := range s {
		if x == a {
			return true
		}
	}
	return false
}

// Result is what [Run] measured: one TargetResult per target (two with
// Config.Compare).
type Result struct {
	Targets []*TargetResult
	// Interrupted counts attempts cut short by ctx (not failures).
	Interrupted int
	// Elapsed is the wall time of the run.
	Elapsed time.Duration
}

// Verdict combines the targets: NotPreserved if any target saw another
// address, else NoReport if any target got no report, else Unknown if any
// is unknown, else Preserved.
func (r Result) Verdict() Verdict {
	v := Preserved
	for _, t := range r.Targets {
		switch {
		case t.Verdict == NotPreserved:
			return NotPreserved
		case t.Verdict == NoReport:
			v = NoReport
		case t.Verdict == Unknown && v == Preserved:
			v = Unknown
		}
	}
	return v
}

// Run probes cfg.Target (and cfg.Compare) cfg.Count times with up to
// cfg.Concurrency attempts in flight, and aggregates the attempts.
//
// It blocks until every attempt has finished or ctx is done; cancelling
// ctx stops starting new attempts and aborts those in flight (counted in
// Result.Interrupted, not as failures), and Run then returns the result so
// far with ctx's error. All goroutines it starts have ended when it
// returns. A failed attempt is not an error of Run: it is counted in the
// result.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if err := cfg.Validate(); err != nil {
		return Result{}, err
	}
	targets := []string{cfg.Target}
	if cfg.Compare != "" {
		targets = append(targets, cfg.Compare)
	}
	res := Result{}
	for _, t := range targets {
		tr := newTargetResult(t)
		tr.Expected, tr.ExpectedFrom = cfg.expectation()
		res.Targets = append(res.Targets, tr)
	}
	workers := max(1, cfg.Concurrency)
	if cfg.Count > 0 {
		workers = min(workers, cfg.Count*len(targets))
	}
	start := time.Now()

	type job struct{ index, seq int }
	jobs := make(chan job)
	results := make(chan Attempt)
	var wg sync.WaitGroup

	// Producer: rounds of one job per target, paced by Interval.
	wg.Go(func() {
		defer close(jobs)
		timer := time.NewTimer(0)
		defer timer.Stop()
		for seq := 0; cfg.Count == 0 || seq < cfg.Count; seq++ {
			if seq > 0 && cfg.Interval > 0 {
				timer.Reset(time.Until(start.Add(time.Duration(seq) * cfg.Interval)))
				select {
				case <-ctx.Done():
					return
				case <-timer.C:
				}
			}
			for i := range targets {
				select {
				case <-ctx.Done():
					return
				case jobs <- job{i, seq}:
				}
			}
		}
	})
	var workersWG sync.WaitGroup
	for range workers {
		workersWG.Go(func() {
			for j := range jobs {
				results <- attempt(ctx, cfg, targets[j.index], j.index, j.seq)
			}
		})
	}
	go func() { // closes results once every worker is done; owned by Run via results
		workersWG.Wait()
		close(results)
	}()
	for a := range results {
		if ctx.Err() != nil && a.Err != nil && (errors.Is(a.Err, context.Canceled) || errors.Is(a.Err, context.DeadlineExceeded)) {
			res.Interrupted++
			continue
		}
		res.Targets[a.Index].add(a)
		if cfg.OnAttempt != nil {
			cfg.OnAttempt(a)
		}
	}
	wg.Wait()
	for _, t := range res.Targets {
		t.summarize()
	}
	res.Elapsed = time.Since(start)
	return res, ctx.Err()
}

func attempt(ctx context.Context, cfg Config, target string, index, seq int) Attempt {
	opts := cfg.Options
	if n := len(cfg.ProxySources); n > 0 {
		p := *opts.Proxy
		p.Src = cfg.ProxySources[seq%n]
		opts.Proxy = &p
	}
	rep, tm, err := Once(ctx, target, opts)
	a := Attempt{Target: target, Index: index, Seq: seq, Report: rep, Timings: tm, Err: err}
	var src ExpectSource
	a.Expected, src = cfg.expectation()
	switch src {
	case ExpectLocal:
		a.Expected = tm.Local.Addr()
	case ExpectProxySrc:
		a.Expected = opts.Proxy.Src.Addr().Unmap()
	}
	if rep != nil {
		saw, perr := ClientAddr(rep)
		if perr != nil {
			if a.Err == nil {
				a.Err = &Error{StageReport, perr}
			}
			return a
		}
		a.Saw = saw
		a.Verdict = Judge(saw.Addr(), a.Expected, src)
	}
	return a
}
