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
	// Families, when not empty, probes Target once per address family
	// listed (4, 6), each as its own target result, as if Options.Family
	// were set to it. It excludes Compare.
	Families []int
	// Count is the number of rounds; a round is one attempt per target
	// (two with Compare or two Families).
	// Concurrency is the number of rounds started together and the number
	// of attempts in flight at once (default 1). Samples are recorded in
	// completion order, so with more than one attempt in flight
	// "consecutive" (for jitter) means consecutive to finish.
	Concurrency int
	// Interval is the time between the starts of consecutive batches of
	// Concurrency rounds: every Interval, Concurrency rounds start (so -c 4
	// -i 100ms starts 4 rounds every 100 ms). 0 starts each attempt as soon
	// as one of the Concurrency slots is free.
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
	if len(c.Families) > 0 && c.Compare != "" {
		return errors.New("probe: address families and a compared target exclude each other")
	}
	for _, f := range c.Families {
		if f != 4 && f != 6 {
			return fmt.Errorf("probe: address family must be 4 or 6, not %d", f)
		}
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
	Target   string    // the host:port probed
	Index    int       // 0 for Config.Target, 1 for Config.Compare or the second family
	Family   int       // the address family asked for (4, 6), 0 when any
	Seq      int       // the round, from 0
	Start    time.Time // when the attempt started
	Report   report.Report
	Timings  Timings
	Err      error          // nil, or an [*Error]
	Saw      netip.AddrPort // the client address in the report, unmapped
	Expected netip.Addr     // the address the server should have seen
	Verdict  Verdict
	// Diagnosis is the likely cause of the verdict; Advice its sentence
	// (see [Diagnose]).
	Diagnosis Diagnosis
	Advice    string
}

// Outage is a run of consecutive failed attempts (see [Diagnosis.Failed])
// of one target, in completion order.
type Outage struct {
	// Start is when the first failed attempt started; End when the next
	// successful attempt started, or when the last failed one ended if
	// none followed.
	Start, End time.Time
	Failures   int  // attempts in the run
	Recovered  bool // a successful attempt ended the run
}

// Duration is End - Start.
func (o Outage) Duration() time.Duration { return o.End.Sub(o.Start) }

// TargetResult aggregates the attempts against one target. Run fills it
// from its own goroutine; read it once Run has returned.
type TargetResult struct {
	Target string
	Family int // the address family asked for (4, 6), 0 when any
	// Addr is the address the last attempt that connected dialed.
	Addr netip.AddrPort
	// Diagnosis and Advice explain the verdict (the example attempt's, or
	// the last failure's when no report came).
	Diagnosis Diagnosis
	Advice    string
	// LongestOutage is the longest run of failed attempts (zero when none
	// failed); Outages counts the runs.
	LongestOutage Outage
	Outages       int
	Attempts      int // finished attempts, interrupted ones excluded
	Failures      int // attempts that ended in an error
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
	lastFail Attempt             // the last attempt that failed
	outage   Outage              // the run of failures in progress (Failures 0: none)

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
			var refused *RefusedError
			if StageOf(t.LastError) == StageReport && errors.Is(t.LastError, ErrClosed) && !errors.As(t.LastError, &refused) {
				hint = " (a server with --proxy-protocol required or trusted closes a connection whose PROXY header is missing or comes from an untrusted address)"
			}
			return fmt.Sprintf("failed: %s: %v%s", t.Target, t.LastError, hint)
		}
		return "failed: " + t.Target + ": no attempt finished"
	}
	s := Explain(t.Verdict, a.Saw.Addr(), a.Expected, t.ExpectedFrom, a.Report[report.KeyPeer])
	if a.Diagnosis == DiagHeaderIgnored {
		s = fmt.Sprintf("not preserved: the server saw %s instead of %s (%s): it did not read the PROXY header the probe sent", a.Saw.Addr(), a.Expected, t.ExpectedFrom)
	}
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
	t.track(a)
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
		t.Addr = tm.Remote
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

// track follows the runs of failed attempts.
func (t *TargetResult) track(a Attempt) {
	end := a.Start.Add(a.Timings.DNS + a.Timings.Connect + a.Timings.Report)
	if a.Diagnosis.Failed() {
		t.lastFail = a
		if t.outage.Failures == 0 {
			t.outage = Outage{Start: a.Start}
			t.Outages++
		}
		t.outage.Failures++
		if end.After(t.outage.End) {
			t.outage.End = end
		}
		return
	}
	if t.outage.Failures > 0 {
		t.outage.End, t.outage.Recovered = a.Start, true
		t.closeOutage()
	}
}

// closeOutage ends the run in progress and keeps the longest.
func (t *TargetResult) closeOutage() {
	if t.outage.Failures > 0 && t.outage.Duration() >= t.LongestOutage.Duration() {
		t.LongestOutage = t.outage
	}
	t.outage = Outage{}
}

// summarize fills Connect, Report and Echo from the recorders, the
// diagnosis, and closes a run of failures still open.
func (t *TargetResult) summarize() {
	t.closeOutage()
	if a, ok := t.Example(); ok {
		t.Diagnosis, t.Advice = a.Diagnosis, a.Advice
	} else if t.Failures > 0 {
		t.Diagnosis, t.Advice = t.lastFail.Diagnosis, t.lastFail.Advice
	} else {
		t.Diagnosis, t.Advice = DiagNoReport, "no-report: no attempt finished"
	}
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
	targets := []path{{cfg.Target, cfg.Options.Family}}
	switch {
	case cfg.Compare != "":
		targets = append(targets, path{cfg.Compare, cfg.Options.Family})
	case len(cfg.Families) > 0:
		targets = targets[:0]
		for _, f := range cfg.Families {
			targets = append(targets, path{cfg.Target, f})
		}
	}
	res := Result{}
	for _, p := range targets {
		tr := newTargetResult(p.target)
		tr.Family = p.family
		tr.Expected, tr.ExpectedFrom = cfg.expectation()
		res.Targets = append(res.Targets, tr)
	}
	batch := max(1, cfg.Concurrency)
	workers := batch
	if cfg.Count > 0 {
		workers = min(workers, cfg.Count*len(targets))
	}
	start := time.Now()

	type job struct{ index, seq int }
	jobs := make(chan job)
	results := make(chan Attempt)
	var wg sync.WaitGroup

	// Producer: rounds of one job per target, in batches of Concurrency
	// rounds paced by Interval.
	wg.Go(func() {
		defer close(jobs)
		timer := time.NewTimer(0)
		defer timer.Stop()
		for seq := 0; cfg.Count == 0 || seq < cfg.Count; seq++ {
			if seq > 0 && seq%batch == 0 && cfg.Interval > 0 {
				timer.Reset(time.Until(start.Add(time.Duration(seq/batch) * cfg.Interval)))
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

// path is one target of a run: an address and the family asked for.
type path struct {
	target string
	family int
}

// attempt runs one attempt and judges and diagnoses it.
func attempt(ctx context.Context, cfg Config, p path, index, seq int) (a Attempt) {
	opts := cfg.Options
	opts.Family = p.family
	if n := len(cfg.ProxySources); n > 0 {
		h := *opts.Proxy
		h.Src = cfg.ProxySources[seq%n]
		opts.Proxy = &h
	}
	start := time.Now()
	rep, tm, err := Once(ctx, p.target, opts)
	a = Attempt{Target: p.target, Index: index, Family: p.family, Seq: seq, Start: start, Report: rep, Timings: tm, Err: err}
	defer func() {
		var pv byte
		if opts.Proxy != nil {
			pv = opts.Proxy.Version
		}
		a.Diagnosis, a.Advice = Diagnose(a, pv)
	}()
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
