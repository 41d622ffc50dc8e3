package main

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/netip"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/originlens/originlens/internal/probe"
	"github.com/originlens/originlens/internal/report"
)

const gaNote = "note: connect times only the TCP handshake with the first box that answers; through Global " +
	"Accelerator that is the edge, which terminates TCP. report (probe line sent -> report line received) " +
	"is the end-to-end time."

func fmtMS(d time.Duration) string { return fmt.Sprintf("%.3f", ms(d)) }

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// writeText prints the human-readable result.
func writeText(w io.Writer, cfg config, res probe.Result, interrupted bool) {
	if interrupted {
		fmt.Fprintf(w, "interrupted after %s: summary so far (%d attempts in flight dropped)\n", res.Elapsed.Round(time.Millisecond), res.Interrupted)
	}
	if cfg.probe.Compare != "" {
		writeCompare(w, res)
	} else {
		for i, t := range res.Targets {
			if len(res.Targets) > 1 {
				fmt.Fprintln(w, strings.TrimSuffix(pathLabel(res, i), " "))
			}
			writeTarget(w, t, res.Elapsed)
		}
	}
	fmt.Fprintln(w, wrap(gaNote, 96, "      "))
	for i, t := range res.Targets {
		fmt.Fprintln(w, pathLabel(res, i)+shout(t.Explain()))
		fmt.Fprintln(w, pathLabel(res, i)+"diagnosis: "+string(t.Diagnosis))
	}
}

// watchLines prints --watch lines. Its write method is called from
// probe.Run's goroutine, one call at a time.
type watchLines struct {
	w            io.Writer
	done, failed int
}

// write prints one attempt as a --watch line: time, family, target,
// diagnosis, connect and report times, what the server saw (or the error),
// and the running count of failed attempts.
func (l *watchLines) write(a probe.Attempt) {
	l.done++
	if a.Diagnosis.Failed() {
		l.failed++
	}
	writeWatchLine(l.w, a, fmt.Sprintf("  [%d/%d failed]", l.failed, l.done))
}

// writeWatchLine prints one attempt as a --watch line, then tail.
func writeWatchLine(w io.Writer, a probe.Attempt, tail string) {
	fam := ""
	if a.Family != 0 {
		fam = fmt.Sprintf("IPv%d ", a.Family)
	}
	detail := ""
	switch {
	case a.Saw.IsValid():
		detail = "saw " + a.Saw.Addr().String()
	case a.Err != nil:
		detail = a.Err.Error()
	}
	rtt := "connect - report -"
	if a.Timings.Remote.IsValid() {
		rtt = "connect " + fmtMS(a.Timings.Connect) + " ms report "
		if a.Report != nil {
			rtt += fmtMS(a.Timings.Report) + " ms"
		} else {
			rtt += "-"
		}
	}
	fmt.Fprintf(w, "%s %s%s seq=%d %-21s %s  %s%s\n", a.Start.Format("15:04:05.000"), fam, a.Target, a.Seq, a.Diagnosis, rtt, detail, tail)
}

// writeWatchSummary prints the --watch summary: per target the attempts,
// the failures and the longest run of failures as a duration, with when it
// started and ended.
func writeWatchSummary(w io.Writer, res probe.Result) {
	for i, t := range res.Targets {
		fmt.Fprintf(w, "--- %s%s: %s, %d failed (%.1f%% loss) in %s; report p50 %s ms\n", pathLabel(res, i), t.Target,
			plural(t.Attempts, "attempt"), t.Failures, t.LossPct(), res.Elapsed.Round(time.Millisecond), fmtMS(t.Report.P50))
		fmt.Fprintln(w, "    "+outageText(t))
	}
}

// outageText describes a target's longest run of failures.
func outageText(t *probe.TargetResult) string {
	o := t.LongestOutage
	if o.Failures == 0 {
		return "longest run of failures: none"
	}
	end := "recovered"
	if !o.Recovered {
		end = "not recovered at the end"
	}
	return fmt.Sprintf("longest run of failures: %.3f s (%s) from %s to %s, %s; %d run(s) of failures",
		o.Duration().Seconds(), plural(o.Failures, "attempt"), o.Start.Format("15:04:05.000"), o.End.Format("15:04:05.000"), end, t.Outages)
}

// csvHeader is the --format csv header row.
var csvHeader = []string{"time", "family", "target", "connect_ms", "report_ms", "server_saw", "verdict", "diagnosis"}

// csvWriter writes one row per attempt, the header first.
type csvWriter struct {
	w      *csv.Writer
	header bool
}

func newCSVWriter(w io.Writer) *csvWriter { return &csvWriter{w: csv.NewWriter(w)} }

func (c *csvWriter) row(a probe.Attempt) {
	if !c.header {
		_ = c.w.Write(csvHeader)
		c.header = true
	}
	fam, saw, connect, rep := "", "", "", ""
	if a.Family != 0 {
		fam = fmt.Sprintf("ipv%d", a.Family)
	} else if a.Timings.Remote.IsValid() {
		fam = familyName(a.Timings.Remote.Addr())
	} else if ap, err := netip.ParseAddrPort(a.Target); err == nil {
		// Not connected (refused, timed out): an address target still
		// says which family was tried; a name's is unknown.
		fam = familyName(ap.Addr().Unmap())
	}
	if a.Saw.IsValid() {
		saw = a.Saw.Addr().String()
	}
	if a.Timings.Remote.IsValid() {
		connect = fmt.Sprintf("%.3f", ms(a.Timings.Connect))
	}
	if a.Report != nil {
		rep = fmt.Sprintf("%.3f", ms(a.Timings.Report))
	}
	_ = c.w.Write([]string{a.Start.UTC().Format(time.RFC3339Nano), fam, a.Target, connect, rep, saw, a.Verdict.String(), string(a.Diagnosis)})
	c.w.Flush()
}

func familyName(a netip.Addr) string {
	if a.Is6() {
		return "ipv6"
	}
	return "ipv4"
}

// shout upper-cases an explanation's leading verdict ("not preserved: ...").
func shout(s string) string {
	head, rest, ok := strings.Cut(s, ": ")
	if !ok {
		return s
	}
	return strings.ToUpper(head) + ": " + rest
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

func writeTarget(w io.Writer, t *probe.TargetResult, elapsed time.Duration) {
	fmt.Fprintf(w, "nc-probe %s: %s, %d failed (%.1f%% loss) in %s\n",
		t.Target, plural(t.Attempts, "attempt"), t.Failures, t.LossPct(), elapsed.Round(time.Millisecond))
	if t.Last != nil {
		fmt.Fprintf(w, "  server saw  %s\n", wrap(t.Last.Line(), 90, "              "))
	}
	if len(t.Seen) > 1 {
		fmt.Fprintf(w, "  all seen    %v\n", t.Seen)
	}
	if a, ok := t.Example(); ok && a.Expected.IsValid() {
		fmt.Fprintf(w, "  expected    %s (%s)\n", a.Expected, t.ExpectedFrom)
	} else if t.Expected.IsValid() {
		fmt.Fprintf(w, "  expected    %s (%s)\n", t.Expected, t.ExpectedFrom)
	}
	if t.Failures > 0 {
		fmt.Fprintf(w, "  failures    %s; last: %v\n", stages(t.FailuresByStage), t.LastError)
	}
	if t.Connect.Count == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "  ms\tmin\tp50\tp90\tp99\tmax\tjitter\tn\t")
	for _, row := range []struct {
		name string
		s    probe.Summary
	}{{"dns", t.DNS}, {"connect", t.Connect}, {"report", t.Report}, {"echo", t.Echo}} {
		if row.s.Count == 0 {
			continue
		}
		s := row.s
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t\n", row.name, fmtMS(s.Min), fmtMS(s.P50), fmtMS(s.P90), fmtMS(s.P99), fmtMS(s.Max), fmtMS(s.Jitter), s.Count)
	}
	tw.Flush()
	if t.EchoSkipped != "" {
		fmt.Fprintf(w, "  echo        not measured: %s (not a failure)\n", t.EchoSkipped)
	}
}

func writeCompare(w io.Writer, res probe.Result) {
	a, b := res.Targets[0], res.Targets[1]
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "\tA %s\tB %s\tB/A\n", a.Target, b.Target)
	fmt.Fprintf(tw, "attempts\t%d\t%d\t\n", a.Attempts, b.Attempts)
	fmt.Fprintf(tw, "loss\t%.1f%%\t%.1f%%\t\n", a.LossPct(), b.LossPct())
	seen := func(t *probe.TargetResult) string {
		if a, ok := t.Example(); ok {
			return a.Saw.Addr().String()
		}
		return "-"
	}
	fmt.Fprintf(tw, "server saw\t%s\t%s\t\n", seen(a), seen(b))
	fmt.Fprintf(tw, "via\t%s\t%s\t\n", key(a, report.KeyVia), key(b, report.KeyVia))
	fmt.Fprintf(tw, "peer\t%s\t%s\t\n", key(a, report.KeyPeer), key(b, report.KeyPeer))
	fmt.Fprintf(tw, "country\t%s\t%s\t\n", key(a, report.KeyCountry), key(b, report.KeyCountry))
	fmt.Fprintf(tw, "decision\t%s\t%s\t\n", key(a, report.KeyDecision), key(b, report.KeyDecision))
	fmt.Fprintf(tw, "verdict\t%s\t%s\t\n", a.Verdict, b.Verdict)
	fmt.Fprintf(tw, "diagnosis\t%s\t%s\t\n", a.Diagnosis, b.Diagnosis)
	type metric struct {
		name string
		get  func(*probe.TargetResult) time.Duration
	}
	for _, m := range []metric{
		{"connect p50 ms", func(t *probe.TargetResult) time.Duration { return t.Connect.P50 }},
		{"report min ms", func(t *probe.TargetResult) time.Duration { return t.Report.Min }},
		{"report p50 ms", func(t *probe.TargetResult) time.Duration { return t.Report.P50 }},
		{"report p90 ms", func(t *probe.TargetResult) time.Duration { return t.Report.P90 }},
		{"report p99 ms", func(t *probe.TargetResult) time.Duration { return t.Report.P99 }},
		{"report max ms", func(t *probe.TargetResult) time.Duration { return t.Report.Max }},
		{"report jitter ms", func(t *probe.TargetResult) time.Duration { return t.Report.Jitter }},
		{"echo p50 ms", func(t *probe.TargetResult) time.Duration { return t.Echo.P50 }},
		{"echo p99 ms", func(t *probe.TargetResult) time.Duration { return t.Echo.P99 }},
	} {
		va, vb := m.get(a), m.get(b)
		if va == 0 && vb == 0 {
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", m.name, fmtMS(va), fmtMS(vb), fmtRatio(ratio(va, vb)))
	}
	tw.Flush()
}

func key(t *probe.TargetResult, k string) string {
	if t.Last == nil || t.Last[k] == "" {
		return "-"
	}
	return t.Last[k]
}

func ratio(a, b time.Duration) *float64 {
	if a <= 0 || b <= 0 {
		return nil
	}
	r := float64(b) / float64(a)
	return &r
}

func fmtRatio(r *float64) string {
	if r == nil {
		return "-"
	}
	return fmt.Sprintf("%.2f", *r)
}

func stages(m map[probe.Stage]int) string {
	var parts []string
	for s, n := range m {
		parts = append(parts, fmt.Sprintf("%s %d", s, n))
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}

// wrap breaks a report line at spaces so that lines stay under width.
func wrap(s string, width int, indent string) string {
	var b strings.Builder
	n := 0
	for i, f := range strings.Split(s, " ") {
		if i > 0 {
			if n+1+len(f) > width {
				b.WriteString("\n" + indent)
				n = 0
			} else {
				b.WriteByte(' ')
				n++
			}
		}
		b.WriteString(f)
		n += len(f)
	}
	return b.String()
}

// jsonSummary is a Summary in milliseconds.
type jsonSummary struct {
	Count  int     `json:"count"`
	Min    float64 `json:"min"`
	P50    float64 `json:"p50"`
	P90    float64 `json:"p90"`
	P99    float64 `json:"p99"`
	Max    float64 `json:"max"`
	Mean   float64 `json:"mean"`
	Jitter float64 `json:"jitter"`
}

func toJSONSummary(s probe.Summary) jsonSummary {
	r := func(d time.Duration) float64 { return math.Round(ms(d)*1000) / 1000 } // µs precision
	return jsonSummary{s.Count, r(s.Min), r(s.P50), r(s.P90), r(s.P99), r(s.Max), r(s.Mean), r(s.Jitter)}
}

// jsonTarget is one target in --json output.
type jsonTarget struct {
	Target          string         `json:"target"`
	ServerSaw       string         `json:"server_saw"`     // the client IP the server reported ("" when none)
	ServerSawAll    []string       `json:"server_saw_all"` // every distinct client IP reported
	Expected        string         `json:"expected"`
	ExpectedFrom    string         `json:"expected_from"` // local-address, expect-ip, proxy-src
	Preserved       bool           `json:"preserved"`
	Verdict         string         `json:"verdict"`   // preserved, not-preserved, unknown, no-report
	Diagnosis       string         `json:"diagnosis"` // preserved, source-nat, proxy-header-*, no-report, unreachable, timeout, cannot-tell
	Advice          string         `json:"advice"`    // the diagnosis sentence: the likely cause and the setting to check
	Explanation     string         `json:"explanation"`
	Family          string         `json:"family,omitempty"`  // ipv4 or ipv6, with --family
	Address         string         `json:"address,omitempty"` // the address dialed last
	LongestOutage   *jsonOutage    `json:"longest_outage,omitempty"`
	Attempts        int            `json:"attempts"`
	Failures        int            `json:"failures"`
	LossPct         float64        `json:"loss_pct"`
	FailuresByStage map[string]int `json:"failures_by_stage"`
	LastError       string         `json:"last_error,omitempty"`
	ConnectMS       jsonSummary    `json:"connect_ms"`
	ReportMS        jsonSummary    `json:"report_ms"`
	EchoMS          jsonSummary    `json:"echo_ms"`
	DNSMS           *jsonSummary   `json:"dns_ms,omitempty"` // when the target is a name
	EchoSkipped     string         `json:"echo_skipped,omitempty"`
	Via             string         `json:"via"`
	Peer            string         `json:"peer"`
	Country         string         `json:"country"`
	Decision        string         `json:"decision"`
	Report          report.Report  `json:"report"` // the last report, every key
}

// jsonOutage is a run of failed attempts.
type jsonOutage struct {
	Start      time.Time `json:"start"`
	End        time.Time `json:"end"`
	DurationMS float64   `json:"duration_ms"`
	Failures   int       `json:"failures"`
	Recovered  bool      `json:"recovered"`
}

type jsonResult struct {
	jsonTarget
	Families    []jsonTarget        `json:"families,omitempty"` // --family both: one per family, the first also at the top level
	Compare     *jsonTarget         `json:"compare,omitempty"`
	Ratio       map[string]*float64 `json:"ratio,omitempty"` // compare / target
	Interrupted bool                `json:"interrupted"`
	ElapsedMS   float64             `json:"elapsed_ms"`
	ExitCode    int                 `json:"exit_code"`
	Note        string              `json:"note"`
}

func toJSONTarget(t *probe.TargetResult) jsonTarget {
	j := jsonTarget{
		Target: t.Target, ServerSawAll: []string{}, Verdict: t.Verdict.String(), Explanation: t.Explain(),
		Diagnosis: string(t.Diagnosis), Advice: t.Advice,
		Preserved: t.Verdict == probe.Preserved, Attempts: t.Attempts, Failures: t.Failures, LossPct: t.LossPct(),
		FailuresByStage: map[string]int{}, ConnectMS: toJSONSummary(t.Connect), ReportMS: toJSONSummary(t.Report),
		EchoMS: toJSONSummary(t.Echo), EchoSkipped: t.EchoSkipped, Report: t.Last,
	}
	if t.Family != 0 {
		j.Family = fmt.Sprintf("ipv%d", t.Family)
	}
	if t.Addr.IsValid() {
		j.Address = t.Addr.String()
	}
	if o := t.LongestOutage; o.Failures > 0 {
		j.LongestOutage = &jsonOutage{o.Start, o.End, ms(o.Duration()), o.Failures, o.Recovered}
	}
	if t.DNS.Count > 0 {
		d := toJSONSummary(t.DNS)
		j.DNSMS = &d
	}
	for s, n := range t.FailuresByStage {
		j.FailuresByStage[string(s)] = n
	}
	for _, a := range t.Seen {
		j.ServerSawAll = append(j.ServerSawAll, a.String())
	}
	if a, ok := t.Example(); ok {
		j.ServerSaw = a.Saw.Addr().String()
	}
	if a, ok := t.Example(); ok && a.Expected.IsValid() {
		j.Expected = a.Expected.String()
	} else if t.Expected.IsValid() {
		j.Expected = t.Expected.String()
	}
	j.ExpectedFrom = map[probe.ExpectSource]string{probe.ExpectLocal: "local-address", probe.ExpectFlag: "expect-ip", probe.ExpectProxySrc: "proxy-src"}[t.ExpectedFrom]
	if t.LastError != nil {
		j.LastError = t.LastError.Error()
	}
	if t.Last != nil {
		j.Via, j.Peer, j.Country, j.Decision = t.Last[report.KeyVia], t.Last[report.KeyPeer], t.Last[report.KeyCountry], t.Last[report.KeyDecision]
	}
	return j
}

// writeJSON prints one JSON object: the target's fields at the top level,
// the compared target under "compare" with ratios compare/target.
func writeJSON(w io.Writer, cfg config, res probe.Result, code int, interrupted bool) error {
	out := jsonResult{
		jsonTarget: toJSONTarget(res.Targets[0]), Interrupted: interrupted,
		ElapsedMS: ms(res.Elapsed), ExitCode: code, Note: strings.TrimPrefix(gaNote, "note: "),
	}
	if len(cfg.probe.Families) > 0 {
		for _, t := range res.Targets {
			out.Families = append(out.Families, toJSONTarget(t))
		}
	}
	if cfg.probe.Compare != "" && len(res.Targets) == 2 {
		a, b := res.Targets[0], res.Targets[1]
		c := toJSONTarget(b)
		out.Compare = &c
		out.Ratio = map[string]*float64{
			"connect_p50": ratio(a.Connect.P50, b.Connect.P50),
			"report_p50":  ratio(a.Report.P50, b.Report.P50),
			"report_p90":  ratio(a.Report.P90, b.Report.P90),
			"report_p99":  ratio(a.Report.P99, b.Report.P99),
			"echo_p50":    ratio(a.Echo.P50, b.Echo.P50),
		}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(out); err != nil {
		return fmt.Errorf("writing JSON: %w", err)
	}
	return nil
}

// escaper writes to w with the characters that steer a terminal escaped:
// control characters but newline and tab (C0, DEL, C1: ANSI escapes, a
// carriage return that overwrites a line) and bidirectional controls (a
// right-to-left override that reorders what is shown), as \uXXXX, valid
// inside a JSON string too; invalid UTF-8 as \xXX. A hostile server's
// report or refusal reaches nc-probe's output in many places (sentences,
// tables, errors): escaping the output covers them all. It is safe for
// concurrent use when w is.
type escaper struct{ w io.Writer }

func (e escaper) Write(p []byte) (int, error) {
	clean := true
	for i := 0; i < len(p) && clean; {
		r, n := utf8.DecodeRune(p[i:])
		clean = !steers(r, n)
		i += n
	}
	if clean {
		return e.w.Write(p)
	}
	out := make([]byte, 0, len(p)+16)
	for i := 0; i < len(p); {
		r, n := utf8.DecodeRune(p[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			out = fmt.Appendf(out, `\x%02x`, p[i])
		case steers(r, n):
			out = fmt.Appendf(out, `\u%04x`, r)
		default:
			out = append(out, p[i:i+n]...)
		}
		i += n
	}
	if _, err := e.w.Write(out); err != nil {
		return 0, err
	}
	return len(p), nil
}

// steers reports whether rune r (n bytes) is to be escaped.
func steers(r rune, n int) bool {
	if r == utf8.RuneError && n == 1 {
		return true
	}
	return r != '\n' && r != '\t' && (unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r))
}
