package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/originlens/originlens/internal/heatmap"
)

// problems lists what does not add up in a result, for the summary and the
// exit status.
func (r result) problems(spoofs int) []string {
	var p []string
	t := r.Tally
	if t.Failed > 0 {
		p = append(p, fmt.Sprintf("%d probe connections failed (last error: %v)", t.Failed, t.LastErr))
	}
	if t.Refused != spoofs {
		p = append(p, fmt.Sprintf("%d connections refused, want exactly the %d spoof attempts", t.Refused, spoofs))
	}
	if r.AppSpoofs != spoofs && r.AppActions != nil {
		p = append(p, fmt.Sprintf("the app counted %d spoofed headers, want %d", r.AppSpoofs, spoofs))
	}
	want := int64(t.Served + t.Redirect + t.Denied + t.Refused)
	if r.Produced >= 0 && r.Produced != want {
		p = append(p, fmt.Sprintf("%d events produced, want one per connection: %d", r.Produced, want))
	}
	if r.Indexed >= 0 && r.Produced >= 0 && r.Indexed != r.Produced {
		p = append(p, fmt.Sprintf("%d events indexed, want the %d produced", r.Indexed, r.Produced))
	}
	if r.Consumed >= 0 && r.Produced >= 0 && r.Consumed != r.Produced {
		p = append(p, fmt.Sprintf("ingest consumed %d events, want the %d produced", r.Consumed, r.Produced))
	}
	if r.DeadLettered > 0 {
		p = append(p, fmt.Sprintf("ingest dead-lettered %d events, want none (see ingest.log)", r.DeadLettered))
	}
	if r.HeatmapEvents >= 0 && r.Produced >= 0 && r.HeatmapEvents != r.Produced {
		p = append(p, fmt.Sprintf("the heat map counted %d events, want the %d produced", r.HeatmapEvents, r.Produced))
	}
	if ht, ok := r.heatmapRun(); ok {
		// The page's counters mean what the probes' do: unplaced clients
		// got a decision without a country; refused connections are not
		// clients and count apart.
		if u := t.unplaced(); ht.Unplaced != int64(u) {
			p = append(p, fmt.Sprintf("the heat map counted %d unplaced clients, the probes %d", ht.Unplaced, u))
		}
		if ht.Refused != int64(t.Refused) {
			p = append(p, fmt.Sprintf("the heat map counted %d refused connections, the probes %d", ht.Refused, t.Refused))
		}
	}
	return p
}

// heatmapRun returns the heat map's counters for this run (what its page
// counted during the traffic); false without a heat map.
func (r result) heatmapRun() (heatmap.Totals, bool) {
	if r.Heatmap == nil || r.HeatmapEvents < 0 {
		return heatmap.Totals{}, false
	}
	a, b := r.Heatmap.Totals, r.HeatmapBefore
	return heatmap.Totals{
		Events: a.Events - b.Events, Served: a.Served - b.Served, Redirected: a.Redirected - b.Redirected,
		Denied: a.Denied - b.Denied, Refused: a.Refused - b.Refused, Other: a.Other - b.Other,
		Located: a.Located - b.Located, Unplaced: a.Unplaced - b.Unplaced,
	}, true
}

func num(n int64, unknown string) string {
	if n < 0 {
		return unknown
	}
	return fmt.Sprint(n)
}

// printSummary prints the counters, the per-country table and where to look.
func printSummary(w io.Writer, cfg Config, r result, ui, logDir string) {
	t := r.Tally
	fmt.Fprintf(w, "\nsummary\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "  connections\tserved %d, redirected %d, denied %d, refused %d, failed %d\t(what the probes were told)\n",
		t.Served, t.Redirect, t.Denied, t.Refused, t.Failed)
	if r.AppActions != nil {
		fmt.Fprintf(tw, "  app counted\tclosed %d, denied %d, refused %d (spoofed PROXY headers: %d)\t(the app's /metrics)\n",
			r.AppActions["connection-closed"], r.AppActions["connection-denied"], r.AppActions["connection-refused"], r.AppSpoofs)
	}
	ingested := "indexed n/a: ingest not running"
	switch {
	case r.Indexing:
		ingested = fmt.Sprintf("indexed %s (%s)", num(r.Indexed, "unknown"), r.IndexedWhere)
	case r.Heatmap != nil || r.Consumed >= 0:
		ingested = fmt.Sprintf("consumed %s by ingest (nothing indexed: set OPENSEARCH_URL to index into OpenSearch)", num(r.Consumed, "unknown"))
	}
	// No comment column on this long line (a line without the cell ends
	// the tabwriter's column block, so it does not widen the others).
	fmt.Fprintf(tw, "  events\tproduced %s (Kafka topic %s), %s\n", num(r.Produced, "unknown"), topic, ingested)
	ht, withHeatmap := r.heatmapRun()
	if withHeatmap {
		fmt.Fprintf(tw, "  heat map\t%d events, %d cells, unplaced %d, refused %d\t(the heat-map page's counters)\n",
			ht.Events, len(r.Heatmap.Cells), ht.Unplaced, ht.Refused)
	}
	tw.Flush()

	// Per-country table: the probes' view, with what ingest counted: the
	// indexed documents (OpenSearch's aggregation), or without OpenSearch
	// the events its own heat map aggregated.
	column := "indexed"
	if !r.Indexing {
		column = "ingested"
	}
	indexedBy := map[string]int64{}
	names := map[string]string{}
	if r.Heatmap != nil {
		for _, c := range r.Heatmap.Countries {
			indexedBy[c.ISO] = c.Count
			names[c.ISO] = c.Name
		}
	}
	type row struct {
		name, iso, idx           string
		n, serve, redirect, deny int
	}
	var rows []row
	width := len("country")
	for _, c := range t.countries() {
		name := names[c.ISO]
		if name == "" {
			name = r.Names[c.ISO]
		}
		if c.ISO == "--" {
			name = "(unplaced)"
		}
		idx := "-"
		switch {
		case c.ISO == "--" && withHeatmap:
			idx = fmt.Sprint(ht.Unplaced) // the page's "unplaced"
		case r.Heatmap != nil && c.ISO != "--":
			idx = fmt.Sprint(indexedBy[c.ISO])
		}
		width = max(width, len([]rune(name)))
		rows = append(rows, row{name, c.ISO, idx, c.N, c.Serve, c.Redirect, c.Deny})
	}
	unplaced := 0
	if _, ok := t.ByCountry["--"]; ok {
		unplaced = 1
	}
	pad := func(s string) string { return s + strings.Repeat(" ", width-len([]rune(s))) }
	fmt.Fprintf(w, "\n  %s  ISO  conns  serve  redirect  deny  %s\n", pad("country"), column)
	for _, x := range rows {
		fmt.Fprintf(w, "  %s  %-3s  %5d  %5d  %8d  %4d  %*s\n", pad(x.name), x.iso, x.n, x.serve, x.redirect, x.deny, len(column), x.idx)
	}
	fmt.Fprintf(w, "(%d countries; denied: the embargo rule; redirected: EU data stays in the EU; refused: PROXY headers from %s, which is not a trusted proxy)\n",
		len(rows)-unplaced, spoofSource)

	if p := r.problems(cfg.Spoofs); len(p) > 0 {
		fmt.Fprintf(w, "\nWARNING: the numbers do not add up:\n  - %s\n", strings.Join(p, "\n  - "))
	}

	fmt.Fprintf(w, "\nwhere to look\n")
	if ui != "" {
		fmt.Fprintf(w, "  heat map     %s  (live: refreshes every 3 s%s)\n", ui, map[bool]string{true: "", false: "; gone when the demo ends, use --keep"}[cfg.Keep])
	}
	if cfg.DashboardsURL != "" {
		fmt.Fprintf(w, "  dashboards   %s/app/dashboards#/view/%s  (imported by ingest; time range: last 15 minutes)\n",
			strings.TrimRight(redact(cfg.DashboardsURL), "/"), dashboardID)
	}
	fmt.Fprintf(w, "  logs         %s/ (devkafka.log, app.log, ingest.log)\n", logDir)
}

// dashboardID is the id of the dashboard in deploy/dashboards/originlens.ndjson.
const dashboardID = "originlens-connections"

// unplaced is the number of clients that got a decision without a country
// (the summary's "(unplaced)" row). Refused connections are not clients.
func (t *tally) unplaced() int {
	if c := t.ByCountry["--"]; c != nil {
		return c.N
	}
	return 0
}
