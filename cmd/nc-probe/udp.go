package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/originlens/originlens/internal/probe"
	"github.com/originlens/originlens/internal/report"
)

// runUDP executes a --udp run and returns the exit code: 0 preserved, 1 the
// server saw another address, 2 no answer (or a failure), 3 cannot tell.
func runUDP(ctx context.Context, cfg config, stdout, stderr io.Writer) int {
	pc := cfg.probe
	if pc.Compare != "" || pc.Options.Echo > 0 {
		fmt.Fprintln(stderr, "nc-probe: --compare and --echo are TCP only; drop them with --udp")
		return exitFailure
	}
	ucfg := probe.UDPConfig{
		Target: pc.Target, Count: pc.Count, Concurrency: pc.Concurrency, Interval: pc.Interval,
		Wait: pc.Options.Timeout, Expect: pc.Expect, Bind: pc.Options.Bind, Proxy: pc.Options.Proxy, Family: pc.Options.Family,
	}
	res, err := probe.RunUDP(ctx, ucfg)
	interrupted := err != nil && ctx.Err() != nil
	if err != nil && !interrupted && (!cfg.json || res.Diagnosis == "") {
		fmt.Fprintln(stderr, "nc-probe: "+err.Error())
		return exitFailure
	}
	code := exitCode(res.Verdict)
	if err != nil && !interrupted {
		code = exitFailure // a failure after a report (a send error): still a failed run
	}
	if cfg.json {
		if err := writeUDPJSON(stdout, &res, code, interrupted); err != nil {
			fmt.Fprintln(stderr, "nc-probe: "+err.Error())
			return exitFailure
		}
		fmt.Fprintln(stderr, res.Advice)
		return code
	}
	writeUDPText(stdout, &res, interrupted)
	fmt.Fprintln(stderr, res.Advice)
	return code
}

func writeUDPText(w io.Writer, r *probe.UDPResult, interrupted bool) {
	if interrupted {
		fmt.Fprintf(w, "interrupted after %s: summary so far\n", r.Elapsed.Round(time.Millisecond))
	}
	fmt.Fprintf(w, "nc-probe --udp %s: %s sent, %d answered (%.1f%% loss), %d duplicates, %d reordered, %d truncated in %s\n",
		r.Target, plural(r.Sent, "datagram"), r.Received, r.LossPct(), r.Duplicates, r.Reordered, r.Truncated, r.Elapsed.Round(time.Millisecond))
	if r.Unmatched > 0 {
		fmt.Fprintf(w, "  warning     %d replies echoed no probe line (the server read other bytes, such as a PROXY header, as the first line)\n", r.Unmatched)
	}
	if r.Last != nil {
		fmt.Fprintf(w, "  server saw  %s\n", wrap(r.Last.Line(), 90, "              "))
	}
	if len(r.Seen) > 1 {
		fmt.Fprintf(w, "  all seen    %v\n", r.Seen)
	}
	fmt.Fprintf(w, "  expected    %s (%s)\n", r.Expected, r.ExpectedFrom)
	if r.OtherSource > 0 {
		fmt.Fprintf(w, "  warning     %d replies came from another address than %s (a host answering from the wrong address, or NAT)\n", r.OtherSource, r.Target)
	}
	if r.RTT.Count > 0 {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "  ms\tmin\tp50\tp90\tp99\tmax\tjitter\tn\t")
		s := r.RTT
		fmt.Fprintf(tw, "  rtt\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t\n", fmtMS(s.Min), fmtMS(s.P50), fmtMS(s.P90), fmtMS(s.P99), fmtMS(s.Max), fmtMS(r.Jitter), s.Count)
		tw.Flush()
		fmt.Fprintln(w, "      jitter: RFC 3550 interarrival jitter of the replies")
	}
	fmt.Fprintln(w, shout(r.Explain()))
	fmt.Fprintln(w, "diagnosis: "+string(r.Diagnosis))
}

// jsonUDP is the --json output of a --udp run.
type jsonUDP struct {
	Transport    string        `json:"transport"` // "udp"
	Target       string        `json:"target"`
	ServerSaw    string        `json:"server_saw"`
	ServerSawAll []string      `json:"server_saw_all"`
	Expected     string        `json:"expected"`
	ExpectedFrom string        `json:"expected_from"`
	Preserved    bool          `json:"preserved"`
	Verdict      string        `json:"verdict"`
	Diagnosis    string        `json:"diagnosis"` // as for TCP; no answer at all is timeout
	Advice       string        `json:"advice"`    // the diagnosis sentence: the likely cause and the setting to check
	Explanation  string        `json:"explanation"`
	Sent         int           `json:"sent"`
	Received     int           `json:"received"`
	LossPct      float64       `json:"loss_pct"`
	Duplicates   int           `json:"duplicates"`
	Reordered    int           `json:"reordered"`
	Truncated    int           `json:"truncated"`
	OtherSource  int           `json:"other_source"`
	Unmatched    int           `json:"unmatched"` // replies with a report but no probe line
	RTTMS        jsonSummary   `json:"rtt_ms"`    // its jitter is RFC 3550's
	Via          string        `json:"via"`
	Peer         string        `json:"peer"`
	Country      string        `json:"country"`
	Decision     string        `json:"decision"`
	Report       report.Report `json:"report"`
	Interrupted  bool          `json:"interrupted"`
	ElapsedMS    float64       `json:"elapsed_ms"`
	ExitCode     int           `json:"exit_code"`
}

func writeUDPJSON(w io.Writer, r *probe.UDPResult, code int, interrupted bool) error {
	out := jsonUDP{
		Transport: "udp", Target: r.Target, ServerSawAll: []string{}, Expected: r.Expected.String(),
		ExpectedFrom: map[probe.ExpectSource]string{probe.ExpectLocal: "local-address", probe.ExpectFlag: "expect-ip", probe.ExpectProxySrc: "proxy-src"}[r.ExpectedFrom],
		Preserved:    r.Verdict == probe.Preserved, Verdict: r.Verdict.String(), Explanation: r.Explain(),
		Diagnosis: string(r.Diagnosis), Advice: r.Advice, Unmatched: r.Unmatched,
		Sent: r.Sent, Received: r.Received, LossPct: r.LossPct(), Duplicates: r.Duplicates, Reordered: r.Reordered,
		Truncated: r.Truncated, OtherSource: r.OtherSource, RTTMS: toJSONSummary(r.RTT), Report: r.Last,
		Interrupted: interrupted, ElapsedMS: ms(r.Elapsed), ExitCode: code,
	}
	out.RTTMS.Jitter = toJSONSummary(probe.Summary{Jitter: r.Jitter}).Jitter
	for _, a := range r.Seen {
		out.ServerSawAll = append(out.ServerSawAll, a.String())
	}
	if r.Saw.IsValid() {
		out.ServerSaw = r.Saw.Addr().String()
	}
	if r.Last != nil {
		out.Via, out.Peer, out.Country, out.Decision = r.Last[report.KeyVia], r.Last[report.KeyPeer], r.Last[report.KeyCountry], r.Last[report.KeyDecision]
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(out); err != nil {
		return fmt.Errorf("writing JSON: %w", err)
	}
	return nil
}
