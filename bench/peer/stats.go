package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// sample is one server's measurements in one round.
type sample struct {
	Server  string
	Round   int
	OK      int64
	Failed  int64
	Wall    time.Duration
	P50     time.Duration
	P99     time.Duration
	Max     time.Duration
	CPU     time.Duration // server process CPU (utime+stime) during the round
	GenCPU  time.Duration // load generator process CPU during the round
	PeakRSS int64         // server VmHWM at the end of the round
	RSS     int64         // server VmRSS at the end of the round
}

// ConnsPerSec is completed connections per wall-clock second.
func (s sample) ConnsPerSec() float64 {
	if s.Wall <= 0 {
		return 0
	}
	return float64(s.OK) / s.Wall.Seconds()
}

// CPUPer10k is the server's CPU seconds per 10,000 connections.
func (s sample) CPUPer10k() float64 { return per10k(s.CPU, s.OK) }

// per10k is CPU seconds per 10,000 connections; 0 without connections.
func per10k(cpu time.Duration, conns int64) float64 {
	if conns == 0 {
		return 0
	}
	return cpu.Seconds() * 10000 / float64(conns)
}

// Util is the server's CPU use as a fraction of one core.
func (s sample) Util() float64 { return frac(s.CPU, s.Wall) }

// GenUtil is the generator's CPU use as a fraction of one core.
func (s sample) GenUtil() float64 { return frac(s.GenCPU, s.Wall) }

func frac(a, b time.Duration) float64 {
	if b <= 0 {
		return 0
	}
	return a.Seconds() / b.Seconds()
}

// ratio is a/b, or 0 when b is 0.
func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// median of xs (mean of the middle two for an even count); 0 when empty.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	m := len(s) / 2
	if len(s)%2 == 1 {
		return s[m]
	}
	return (s[m-1] + s[m]) / 2
}

// summary is one server's medians over the rounds.
type summary struct {
	Server     string
	ConnPerSec float64
	BestCPS    float64 // the best round's conn/s
	P50, P99   float64 // milliseconds
	CPUPer10k  float64
	Util       float64
	PeakRSS    float64 // bytes, the largest over the rounds
	OK, Failed int64
}

// PerCPUSecond is connections per second of server CPU: what one
// dedicated core would sustain if CPU were the only limit.
func (s summary) PerCPUSecond() float64 {
	if s.CPUPer10k == 0 {
		return 0
	}
	return 10000 / s.CPUPer10k
}

// Saturated reports whether the server used at least 90% of a core: only
// then does its conn/s measure the server rather than the generator or
// the rest of the machine.
func (s summary) Saturated() bool { return s.Util >= 0.9 }

// summarize takes the median of each metric over server's samples.
func summarize(server string, ss []sample) summary {
	var cps, p50, p99, cpu, util []float64
	out := summary{Server: server}
	for _, s := range ss {
		if s.Server != server {
			continue
		}
		cps = append(cps, s.ConnsPerSec())
		out.BestCPS = max(out.BestCPS, s.ConnsPerSec())
		p50 = append(p50, ms(s.P50))
		p99 = append(p99, ms(s.P99))
		cpu = append(cpu, s.CPUPer10k())
		util = append(util, s.Util())
		out.PeakRSS = max(out.PeakRSS, float64(s.PeakRSS))
		out.OK += s.OK
		out.Failed += s.Failed
	}
	out.ConnPerSec, out.P50, out.P99 = median(cps), median(p50), median(p99)
	out.CPUPer10k, out.Util = median(cpu), median(util)
	return out
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// table writes a Markdown table with aligned columns.
func table(w io.Writer, head []string, rows [][]string) {
	width := make([]int, len(head))
	for i, h := range head {
		width[i] = len(h)
	}
	for _, r := range rows {
		for i, c := range r {
			width[i] = max(width[i], len([]rune(c)))
		}
	}
	line := func(cells []string) {
		var b strings.Builder
		b.WriteString("|")
		for i, c := range cells {
			fmt.Fprintf(&b, " %s%s |", c, strings.Repeat(" ", width[i]-len([]rune(c))))
		}
		fmt.Fprintln(w, b.String())
	}
	line(head)
	sep := make([]string, len(head))
	for i := range sep {
		sep[i] = strings.Repeat("-", width[i])
	}
	line(sep)
	for _, r := range rows {
		line(r)
	}
}

// roundsTable writes one row per server and round.
func roundsTable(w io.Writer, ss []sample) {
	head := []string{"round", "server", "conns", "failed", "conn/s", "p50 ms", "p99 ms", "max ms",
		"CPU s/10k conns", "server CPU", "generator CPU", "gen CPU s/10k", "peak RSS MiB"}
	var rows [][]string
	for _, s := range ss {
		rows = append(rows, []string{
			fmt.Sprint(s.Round), s.Server, fmt.Sprint(s.OK), fmt.Sprint(s.Failed),
			fmt.Sprintf("%.0f", s.ConnsPerSec()),
			fmt.Sprintf("%.3f", ms(s.P50)), fmt.Sprintf("%.3f", ms(s.P99)), fmt.Sprintf("%.1f", ms(s.Max)),
			fmt.Sprintf("%.3f", s.CPUPer10k()),
			fmt.Sprintf("%.0f%%", 100*s.Util()), fmt.Sprintf("%.0f%%", 100*s.GenUtil()),
			fmt.Sprintf("%.3f", per10k(s.GenCPU, s.OK)),
			fmt.Sprintf("%.1f", float64(s.PeakRSS)/(1<<20)),
		})
	}
	table(w, head, rows)
}

// summaryTable writes the medians of the app and each peer (nginx, and
// nginx-tuned when it ran), and the ratio app/peer for each peer.
func summaryTable(w io.Writer, app summary, peers ...summary) {
	head := []string{"metric (median of rounds)"}
	for _, p := range peers {
		head = append(head, p.Server)
	}
	head = append(head, "app")
	for _, p := range peers {
		head = append(head, "app/"+p.Server)
	}
	metrics := []struct {
		name, f string
		v       func(summary) float64
	}{
		{"connections/s", "%.0f", func(s summary) float64 { return s.ConnPerSec }},
		{"connections/s, best round", "%.0f", func(s summary) float64 { return s.BestCPS }},
		{"reply latency p50 (ms)", "%.3f", func(s summary) float64 { return s.P50 }},
		{"reply latency p99 (ms)", "%.3f", func(s summary) float64 { return s.P99 }},
		{"CPU seconds per 10,000 connections", "%.3f", func(s summary) float64 { return s.CPUPer10k }},
		{"connections per server CPU-second", "%.0f", summary.PerCPUSecond},
		{"server CPU (share of one core)", "%.2f", func(s summary) float64 { return s.Util }},
		{"peak RSS (MiB, max of rounds)", "%.1f", func(s summary) float64 { return s.PeakRSS / (1 << 20) }},
	}
	var rows [][]string
	for _, m := range metrics {
		r := []string{m.name}
		for _, p := range peers {
			r = append(r, fmt.Sprintf(m.f, m.v(p)))
		}
		r = append(r, fmt.Sprintf(m.f, m.v(app)))
		for _, p := range peers {
			r = append(r, fmt.Sprintf("%.2fx", ratio(m.v(app), m.v(p))))
		}
		rows = append(rows, r)
	}
	table(w, head, rows)
}

// goal is one stated goal and whether the run met it.
type goal struct {
	Name, Result string
	Met          bool
	// Inconclusive: the run cannot judge the goal (servers not
	// saturated); Met is then what the numbers would say.
	Inconclusive bool
}

func (g goal) String() string {
	v := "NOT MET"
	if g.Met {
		v = "met"
	}
	if g.Inconclusive {
		v = "INCONCLUSIVE (numbers say " + v + ")"
	}
	return fmt.Sprintf("- %s: %s (%s)", g.Name, v, g.Result)
}

// throughputGoals judges the goals on the summaries.
func throughputGoals(app, ngx summary) []goal {
	r := ratio(app.ConnPerSec, ngx.ConnPerSec)
	res := fmt.Sprintf("%.2fx", r)
	unsat := !app.Saturated() || !ngx.Saturated()
	if unsat {
		res += fmt.Sprintf("; servers not saturated (app %.0f%%, nginx %.0f%% of a core), so this is not the servers' limit;"+
			" connections per server CPU-second: %.2fx", 100*app.Util, 100*ngx.Util, ratio(app.PerCPUSecond(), ngx.PerCPUSecond()))
	}
	name := ngx.Server
	if name == "" {
		name = "nginx"
	}
	return []goal{
		{"app connections/s >= 1.0x " + name, res, r >= 1.0, unsat},
		{"app p99 no worse than " + name, fmt.Sprintf("%.3f ms vs %.3f ms", app.P99, ngx.P99), app.P99 <= ngx.P99, unsat},
		{"app CPU per connection <= 1.0x " + name, fmt.Sprintf("%.3f vs %.3f s per 10k connections (%.2fx)", app.CPUPer10k, ngx.CPUPer10k, ratio(app.CPUPer10k, ngx.CPUPer10k)),
			app.CPUPer10k > 0 && app.CPUPer10k <= ngx.CPUPer10k, false},
		{"app peak RSS <= 2x " + name, fmt.Sprintf("%.1f vs %.1f MiB (%.2fx)", app.PeakRSS/(1<<20), ngx.PeakRSS/(1<<20), ratio(app.PeakRSS, ngx.PeakRSS)),
			app.PeakRSS > 0 && app.PeakRSS <= 2*ngx.PeakRSS, false},
	}
}
