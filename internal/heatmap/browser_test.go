package heatmap_test

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"image/png"
	"math"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/originlens/originlens/internal/event"
	"github.com/originlens/originlens/internal/geo"
	"github.com/originlens/originlens/internal/heatmap"
	"github.com/originlens/originlens/internal/mmdb"
	"github.com/originlens/originlens/internal/policy"
)

// demoTable is the demo's GeoIP table: the browser test shows what
// `make demo` shows.
const demoTable = "../../deploy/demo/geo-table.tsv"

// tableAggregator feeds an aggregator with events from every city of the
// demo's table, decided by the default residency rules, plus refused
// connections; busier cities first so the heat layer has contrast.
func tableAggregator(t *testing.T) *heatmap.Aggregator {
	t.Helper()
	f, err := os.Open(demoTable)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	table, err := mmdb.ParseTable(f)
	if err != nil {
		t.Fatalf("%s: %v", demoTable, err)
	}
	rules := policy.Default()
	a := heatmap.NewAggregator()
	busy := map[string]int{"US": 12, "DE": 8, "GB": 8, "JP": 8, "IN": 8, "BR": 5, "FR": 5, "SG": 5, "AU": 5}
	for _, e := range table.City {
		if !e.Prefix.Addr().Is4() {
			continue // the IPv6 rows repeat the cities
		}
		d := rules.Decide(e.Prefix.Addr(), geo.Location{
			Class: "public", CountryISO: e.CountryISO, CountryName: e.CountryName, ContinentCode: e.ContinentCode,
			City: e.City, HasLocation: true, Lat: e.Lat, Lon: e.Lon,
		})
		action := event.ActionClosed
		if d.Decision == policy.Deny {
			action = event.ActionDenied
		}
		n := max(2, busy[e.CountryISO])
		for range n {
			a.Add(ev(t, e.CountryISO, e.CountryName, e.Lat, e.Lon, action, d.Decision))
		}
	}
	for range 20 {
		a.Add(ev(t, "", "", 0, 0, event.ActionRefused, ""))
	}
	return a
}

var updateDocs = flag.Bool("update-docs", false, "copy the heat-map screenshot to docs/heatmap.png")

// chromium returns the path of a Chromium binary or skips the test.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{os.Getenv("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"} {
		if name == "" {
			continue
		}
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("skipping: no chromium in PATH (Debian package chromium; set CHROMIUM to another binary)")
	return ""
}

// runChromium runs headless Chromium on url with extra flags and a fresh
// profile, and returns its stdout.
func runChromium(t *testing.T, bin, url string, extra ...string) []byte {
	t.Helper()
	args := []string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
		"--disable-component-update", "--no-first-run", "--disable-quic", "--disable-sync", "--disable-extensions",
		"--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio",
		"--user-data-dir=" + t.TempDir(),
		"--virtual-time-budget=5000",
	}
	args = append(append(args, extra...), url)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %v: %v\nstderr:\n%s", extra, err, stderr.String())
	}
	return stdout.Bytes()
}

// outputDir is where the screenshot goes: $TESTOUTPUT when set (CI keeps
// it), else the test's temporary directory.
func outputDir(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("TESTOUTPUT"); d != "" {
		if !filepath.IsAbs(d) {
			t.Fatalf("TESTOUTPUT=%q must be an absolute path", d)
		}
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.TempDir()
}

// canvasData returns the data-* attributes of the map canvas in a dumped
// DOM.
func canvasData(t *testing.T, dom []byte) map[string]string {
	t.Helper()
	tag := regexp.MustCompile(`<canvas id="map"[^>]*>`).Find(dom)
	if tag == nil {
		t.Fatalf("no map canvas in the DOM:\n%s", dom)
	}
	out := map[string]string{}
	for _, m := range regexp.MustCompile(`data-([a-z-]+)="([^"]*)"`).FindAllSubmatch(tag, -1) {
		out[string(m[1])] = string(m[2])
	}
	return out
}

func atoi(t *testing.T, what, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("%s = %q, want a number", what, s)
	}
	return n
}

// rowOrder returns the ISO codes of the country table's rows, in order.
func rowOrder(dom []byte) []string {
	var out []string
	for _, m := range regexp.MustCompile(`<tr data-iso="([A-Z]{2})">`).FindAllSubmatch(dom, -1) {
		out = append(out, string(m[1]))
	}
	return out
}

// projection is the page's equirectangular projection, read from the
// canvas (data-proj "k,x0,y0", CSS pixels).
type projection struct{ k, x0, y0, w, h, r float64 }

func projectionOf(t *testing.T, d map[string]string) projection {
	t.Helper()
	var p projection
	if _, err := fmt.Sscanf(d["proj"], "%g,%g,%g", &p.k, &p.x0, &p.y0); err != nil || p.k <= 0 {
		t.Fatalf("data-proj = %q: %v", d["proj"], err)
	}
	p.w, p.h, p.r = float64(atoi(t, "data-width", d["width"])), float64(atoi(t, "data-height", d["height"])), float64(atoi(t, "data-radius", d["radius"]))
	return p
}

func (p projection) xy(lon, lat float64) (float64, float64) { return p.x0 + lon*p.k, p.y0 - lat*p.k }

// inside reports whether a box around (lon, lat) of radius r pixels lies
// on the canvas.
func (p projection) inside(lon, lat, r float64) bool {
	x, y := p.xy(lon, lat)
	return x-r >= 0 && x+r <= p.w && y-r >= 0 && y+r <= p.h
}

// countryBounds decodes the page's vendored TopoJSON (world-atlas
// countries-110m) and returns the longitude/latitude box of one country's
// outline.
func countryBounds(t *testing.T, name string) (minLon, minLat, maxLon, maxLat float64) {
	t.Helper()
	b, err := os.ReadFile("assets/countries-110m.json")
	if err != nil {
		t.Fatal(err)
	}
	var topo struct {
		Transform struct{ Scale, Translate [2]float64 }
		Arcs      [][][2]float64
		Objects   struct {
			Countries struct {
				Geometries []struct {
					Properties struct{ Name string }
					Arcs       json.RawMessage
				}
			}
		}
	}
	if err := json.Unmarshal(b, &topo); err != nil {
		t.Fatalf("countries-110m.json: %v", err)
	}
	minLon, minLat, maxLon, maxLat = math.Inf(1), math.Inf(1), math.Inf(-1), math.Inf(-1)
	for _, g := range topo.Objects.Countries.Geometries {
		if g.Properties.Name != name {
			continue
		}
		// Arc indexes at any depth (Polygon or MultiPolygon); ~i is arc i
		// reversed.
		for _, m := range regexp.MustCompile(`-?\d+`).FindAll(g.Arcs, -1) {
			i := atoi(t, "arc", string(m))
			if i < 0 {
				i = ^i
			}
			var qx, qy float64
			for _, d := range topo.Arcs[i] {
				qx, qy = qx+d[0], qy+d[1]
				lon := qx*topo.Transform.Scale[0] + topo.Transform.Translate[0]
				lat := qy*topo.Transform.Scale[1] + topo.Transform.Translate[1]
				minLon, maxLon = min(minLon, lon), max(maxLon, lon)
				minLat, maxLat = min(minLat, lat), max(maxLat, lat)
			}
		}
		return minLon, minLat, maxLon, maxLat
	}
	t.Fatalf("no %s in countries-110m.json", name)
	return
}

// TestBrowser opens the page in headless Chromium, waits for the data, and
// checks what a person sees: the density layer and one marker layer per
// decision, the legend, the counters (refused apart from unplaced), the
// country table and its sort, a map that fits the window with nothing cut
// at its edges (New Zealand); then takes a screenshot.
func TestBrowser(t *testing.T) {
	bin := chromium(t)
	a := tableAggregator(t)
	snap := snapshot(t, a)
	if len(snap.Countries) < 30 {
		t.Fatalf("the demo table gives %d countries, want >= 30", len(snap.Countries))
	}
	srv := httptest.NewServer(heatmap.Handler(a))
	defer srv.Close()

	const winW = 1100
	dom := runChromium(t, bin, srv.URL+"/", "--dump-dom", fmt.Sprintf("--window-size=%d,1000", winW))
	d := canvasData(t, dom)

	// Layers: the density of every located cell, and per decision one
	// marker per cell holding that decision.
	var want struct{ serve, redirect, deny int }
	var sum heatmap.Decisions
	maxCount := int64(0)
	for _, c := range snap.Cells {
		want.serve += min(1, int(c.Decisions.Serve))
		want.redirect += min(1, int(c.Decisions.Redirect))
		want.deny += min(1, int(c.Decisions.Deny))
		sum.Serve, sum.Redirect, sum.Deny = sum.Serve+c.Decisions.Serve, sum.Redirect+c.Decisions.Redirect, sum.Deny+c.Decisions.Deny
		maxCount = max(maxCount, c.Count)
	}
	if want.redirect == 0 || want.deny == 0 {
		t.Fatalf("the demo table gives no redirected or denied cells: %+v", want)
	}
	for k, w := range map[string]int{"cells": len(snap.Cells), "heat": len(snap.Cells), "markers-serve": want.serve, "markers-redirect": want.redirect, "markers-deny": want.deny} {
		if got := d[k]; got != strconv.Itoa(w) {
			t.Errorf("canvas data-%s = %q, want %d", k, got, w)
		}
	}
	if atoi(t, "data-draws", d["draws"]) < 1 {
		t.Errorf("canvas never drawn")
	}

	// Legend: the colour scale up to the busiest cell, a symbol and a
	// count per decision layer, and what is not on the map.
	if !bytes.Contains(dom, fmt.Appendf(nil, `<div id="legend" data-max="%d">`, maxCount)) ||
		!bytes.Contains(dom, fmt.Appendf(nil, `<span id="legend-max">%d</span>`, maxCount)) || !bytes.Contains(dom, []byte(`<canvas id="legend-scale"`)) {
		t.Errorf("legend lacks the colour scale up to %d connections per cell", maxCount)
	}
	for id, want := range map[string]int64{
		"l-serve": sum.Serve, "l-redirect": sum.Redirect, "l-deny": sum.Deny,
		"l-unplaced": snap.Totals.Unplaced, "l-refused": snap.Totals.Refused,
	} {
		if !bytes.Contains(dom, fmt.Appendf(nil, `<b id="%s">%d</b>`, id, want)) {
			t.Errorf("legend %s not filled in with %d", id, want)
		}
	}
	for _, k := range []string{"serve", "redirect", "deny"} {
		if !regexp.MustCompile(`<input type="checkbox" data-layer="` + k + `" checked=""><canvas class="sym" data-sym="` + k + `"`).Match(dom) {
			t.Errorf("legend lacks the %s layer's toggle and symbol", k)
		}
	}

	// Counters: refused spoofs are not unplaced clients.
	for id, want := range map[string]int64{"events": snap.Totals.Events, "refused": 20, "unplaced": 0, "denied": snap.Totals.Denied, "redirected": snap.Totals.Redirected} {
		if !bytes.Contains(dom, fmt.Appendf(nil, `<b id="c-%s">%d</b>`, id, want)) {
			t.Errorf("counter %s not filled in with %d", id, want)
		}
	}
	if snap.Totals.Denied == 0 || snap.Totals.Redirected == 0 {
		t.Errorf("totals %+v: want denied and redirected clients from the default rules", snap.Totals)
	}

	// Table: every row, most connections first, in a box that scrolls on
	// its own.
	for _, c := range snap.Countries {
		row := fmt.Sprintf(`<tr data-iso="%s"><td>%s</td><td>%s</td><td>%d</td><td>%d</td><td[^>]*>%d</td><td[^>]*>%d</td></tr>`,
			c.ISO, regexp.QuoteMeta(c.Name), c.ISO, c.Count, c.Decisions.Serve, c.Decisions.Redirect, c.Decisions.Deny)
		if !regexp.MustCompile(row).Match(dom) {
			t.Errorf("country table lacks the row for %s (%+v)", c.ISO, c)
		}
	}
	var byCount []string
	for _, c := range snap.Countries { // the snapshot's order: count desc, ISO
		byCount = append(byCount, c.ISO)
	}
	if got := rowOrder(dom); !slices.Equal(got, byCount) {
		t.Errorf("table order %v, want by connections %v", got, byCount)
	}
	if !bytes.Contains(dom, []byte(`<th data-key="count" aria-sort="descending">`)) || !bytes.Contains(dom, []byte(`<div id="table-wrap">`)) {
		t.Errorf("table lacks its sort mark or its scrolling box")
	}

	// The map is as wide as the window (less the page margins) and shows
	// all of New Zealand and every marker whole.
	p := projectionOf(t, d)
	if p.w < winW-40 || p.w > winW {
		t.Errorf("map is %v px wide in a %d px window", p.w, winW)
	}
	checkNothingCut(t, p, snap)
	if bytes.Contains(dom, []byte("unavailable")) {
		t.Errorf("page reports missing data or outlines")
	}
	if t.Failed() {
		t.Logf("DOM:\n%s", dom)
	}

	t.Run("sort", func(t *testing.T) {
		// A click on a header sets the fragment; the fragment sorts.
		for _, tt := range []struct {
			frag string
			less func(x, y heatmap.Country) int
		}{
			{"sort=iso&dir=asc", func(x, y heatmap.Country) int { return strings.Compare(x.ISO, y.ISO) }},
			{"sort=iso&dir=desc", func(x, y heatmap.Country) int { return strings.Compare(y.ISO, x.ISO) }},
			{"sort=deny&dir=desc", func(x, y heatmap.Country) int {
				return cmp.Or(cmp.Compare(y.Decisions.Deny, x.Decisions.Deny), strings.Compare(x.ISO, y.ISO))
			}},
		} {
			dom := runChromium(t, bin, srv.URL+"/#"+tt.frag, "--dump-dom")
			want := slices.Clone(snap.Countries)
			slices.SortFunc(want, tt.less)
			var iso []string
			for _, c := range want {
				iso = append(iso, c.ISO)
			}
			if got := rowOrder(dom); !slices.Equal(got, iso) {
				t.Errorf("#%s: table order %v, want %v", tt.frag, got, iso)
			}
		}
	})

	t.Run("narrow_window", func(t *testing.T) {
		dom := runChromium(t, bin, srv.URL+"/", "--dump-dom", "--window-size=700,900")
		p := projectionOf(t, canvasData(t, dom))
		if p.w < 700-40 || p.w > 700 {
			t.Errorf("map is %v px wide in a 700 px window", p.w)
		}
		checkNothingCut(t, p, snap)
	})

	shot := filepath.Join(outputDir(t), "heatmap.png")
	runChromium(t, bin, srv.URL+"/", "--screenshot="+shot, fmt.Sprintf("--window-size=%d,1000", winW))
	f, err := os.Open(shot)
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	img, err := png.Decode(f)
	f.Close()
	if err != nil {
		t.Fatalf("screenshot %s: %v", shot, err)
	}
	if b := img.Bounds(); b.Dx() != winW || b.Dy() != 1000 {
		t.Errorf("screenshot is %v, want %dx1000", b, winW)
	}
	t.Logf("screenshot: %s", shot)
	if *updateDocs {
		b, err := os.ReadFile(shot)
		if err == nil {
			err = os.WriteFile(filepath.Join("..", "..", "docs", "heatmap.png"), b, 0o644)
		}
		if err != nil {
			t.Fatalf("updating docs/heatmap.png: %v", err)
		}
	}
}

// checkNothingCut: New Zealand's outline and every cell's marker (its
// largest radius) lie on the canvas.
func checkNothingCut(t *testing.T, p projection, snap heatmap.Snapshot) {
	t.Helper()
	minLon, minLat, maxLon, maxLat := countryBounds(t, "New Zealand")
	if minLon < 160 || maxLon > 180 || maxLat > -30 {
		t.Fatalf("New Zealand's box %v..%v, %v..%v: not New Zealand", minLon, maxLon, minLat, maxLat)
	}
	if !p.inside(minLon, minLat, 0) || !p.inside(maxLon, maxLat, 0) {
		x0, y0 := p.xy(minLon, maxLat)
		x1, y1 := p.xy(maxLon, minLat)
		t.Errorf("New Zealand is drawn at x %.0f..%.0f, y %.0f..%.0f: outside the %vx%v canvas", x0, x1, y0, y1, p.w, p.h)
	}
	for _, c := range snap.Cells {
		if !p.inside(c.Lon, c.Lat, p.r) {
			x, y := p.xy(c.Lon, c.Lat)
			t.Errorf("the marker of the cell at %v,%v (%.0f,%.0f, radius %v) is cut by the %vx%v canvas", c.Lat, c.Lon, x, y, p.r, p.w, p.h)
		}
	}
}

// TestBrowserTransport: the transport filter of the page (#transport=udp)
// asks /api/heatmap for one transport and shows its counters.
func TestBrowserTransport(t *testing.T) {
	bin := chromium(t)
	a := heatmap.NewAggregator()
	for _, e := range mixedEvents(t) {
		a.Add(e)
	}
	udp := snapshotOf(t, a, heatmap.Filter{Transport: heatmap.TransportUDP})
	all := snapshot(t, a)
	if udp.Totals.Events == all.Totals.Events {
		t.Fatalf("the UDP events are all events (%d): the test cannot tell", udp.Totals.Events)
	}
	srv := httptest.NewServer(heatmap.Handler(a))
	defer srv.Close()
	dom := runChromium(t, bin, srv.URL+"/#transport=udp", "--dump-dom")
	if d := canvasData(t, dom); d["transport"] != "udp" || d["cells"] != strconv.Itoa(len(udp.Cells)) {
		t.Errorf("canvas transport %q with %s cells, want udp with %d", d["transport"], d["cells"], len(udp.Cells))
	}
	for id, want := range map[string]int64{"events": udp.Totals.Events, "denied": udp.Totals.Denied, "unplaced": udp.Totals.Unplaced} {
		if !bytes.Contains(dom, fmt.Appendf(nil, `<b id="c-%s">%d</b>`, id, want)) {
			t.Errorf("counter %s not filled in with the UDP %d", id, want)
		}
	}
	if !bytes.Contains(dom, []byte(`<fieldset id="transport" data-value="udp">`)) {
		t.Errorf("the transport selector does not show udp")
	}
}

// TestBrowserInteractive uses the page as a person does, through the
// DevTools protocol: clicks on the table's headers sort it, the table
// scrolls inside its own box, the legend's check boxes hide and show a
// decision's markers, the map follows the window's width when it is
// resized, and the transport buttons switch the data.
func TestBrowserInteractive(t *testing.T) {
	bin := chromium(t)
	a := tableAggregator(t)
	for _, e := range mixedEvents(t) {
		if e.Network.Transport == heatmap.TransportUDP {
			a.Add(e)
		}
	}
	snap := snapshot(t, a)
	udp := snapshotOf(t, a, heatmap.Filter{Transport: heatmap.TransportUDP})
	srv := httptest.NewServer(heatmap.Handler(a))
	defer srv.Close()
	p := openPage(t, bin, srv.URL+"/", 1100, 900)

	rows := func() []string {
		var iso []string
		p.eval(`[...document.querySelectorAll("#countries tbody tr")].map((r) => r.dataset.iso)`, &iso)
		return iso
	}
	sorted := func(less func(x, y heatmap.Country) int) []string {
		c := slices.Clone(snap.Countries)
		slices.SortFunc(c, less)
		var iso []string
		for _, x := range c {
			iso = append(iso, x.ISO)
		}
		return iso
	}
	byISO := func(x, y heatmap.Country) int { return strings.Compare(x.ISO, y.ISO) }
	for _, tt := range []struct {
		header, want string
		order        []string
	}{
		{"iso", "iso,asc", sorted(byISO)},
		{"iso", "iso,desc", sorted(func(x, y heatmap.Country) int { return byISO(y, x) })},
		{"redirect", "redirect,desc", sorted(func(x, y heatmap.Country) int {
			return cmp.Or(cmp.Compare(y.Decisions.Redirect, x.Decisions.Redirect), byISO(x, y))
		})},
		{"count", "count,desc", sorted(func(x, y heatmap.Country) int { return cmp.Or(cmp.Compare(y.Count, x.Count), byISO(x, y)) })},
	} {
		p.click(`#countries th[data-key="` + tt.header + `"] button`)
		p.waitFor("sort "+tt.want, `document.getElementById("countries").dataset.sort === "`+tt.want+`"`)
		if got := rows(); !slices.Equal(got, tt.order) {
			t.Errorf("after a click on %s: rows %v, want %v", tt.header, got, tt.order)
		}
	}

	var scroll struct {
		Overflow                string
		ScrollHeight, Height    float64
		PageScrollY, BoxScrollY float64
	}
	p.eval(`(() => { const w = document.getElementById("table-wrap"); w.scrollTop = 120;
		return {overflow: getComputedStyle(w).overflowY, scrollHeight: w.scrollHeight, height: w.clientHeight,
			pageScrollY: window.scrollY, boxScrollY: w.scrollTop}; })()`, &scroll)
	if scroll.Overflow != "auto" || scroll.ScrollHeight <= scroll.Height || scroll.BoxScrollY != 120 {
		t.Errorf("table box %+v: want a fixed-height box that scrolls its %d rows", scroll, len(snap.Countries))
	}

	p.click(`#legend input[data-layer="deny"]`)
	p.waitFor("no deny markers", `document.getElementById("map").dataset.markersDeny === "0"`)
	var serve string
	p.eval(`document.getElementById("map").dataset.markersServe`, &serve)
	if serve == "0" {
		t.Errorf("hiding the denied layer hid the served one")
	}
	p.click(`#legend input[data-layer="deny"]`)
	p.waitFor("deny markers back", `document.getElementById("map").dataset.markersDeny !== "0"`)

	for _, w := range []int{700, 1400} {
		p.call("Emulation.setDeviceMetricsOverride", map[string]any{"width": w, "height": 900, "deviceScaleFactor": 1, "mobile": false}, nil)
		p.waitFor(fmt.Sprintf("the map at %d px", w), fmt.Sprintf(`(() => { const d = Number(document.getElementById("map").dataset.width); return d > %d && d <= %d; })()`, w-40, w))
		var d map[string]string
		p.eval(`Object.assign({}, document.getElementById("map").dataset)`, &d)
		checkNothingCut(t, projectionOf(t, d), snap)
	}

	p.click(`#transport input[value="udp"]`)
	p.waitFor("the UDP data", `document.getElementById("map").dataset.transport === "udp"`)
	var events string
	p.eval(`document.getElementById("c-events").textContent`, &events)
	if events != strconv.FormatInt(udp.Totals.Events, 10) {
		t.Errorf("UDP only: events %s, want %d", events, udp.Totals.Events)
	}
	var hash string
	p.eval(`location.hash`, &hash)
	if !strings.Contains(hash, "transport=udp") {
		t.Errorf("URL fragment %q does not keep the transport", hash)
	}
	p.click(`#transport input[value=""]`)
	p.waitFor("all transports", `document.getElementById("map").dataset.transport === "" && document.getElementById("c-events").textContent === "`+strconv.FormatInt(snap.Totals.Events, 10)+`"`)

	// Everything the page loaded came from the server that serves it.
	if len(p.requests) < 4 {
		t.Errorf("requests seen: %v, want the page, its scripts, the outlines and the data", p.requests)
	}
	for _, u := range p.requests {
		if !strings.HasPrefix(u, srv.URL+"/") {
			t.Errorf("the page requested %s, outside %s", u, srv.URL)
		}
	}
}
