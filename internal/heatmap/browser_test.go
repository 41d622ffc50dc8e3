package heatmap_test

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"image/png"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
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
		"--disable-component-update", "--no-first-run", "--disable-sync", "--disable-extensions",
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

// TestBrowser opens the page in headless Chromium, waits for the data, and
// checks that the heat layer drew the cells and the table lists the
// countries; then takes a screenshot.
func TestBrowser(t *testing.T) {
	bin := chromium(t)
	a := tableAggregator(t)
	snap := snapshot(t, a)
	if len(snap.Countries) < 30 {
		t.Fatalf("the demo table gives %d countries, want >= 30", len(snap.Countries))
	}
	srv := httptest.NewServer(heatmap.Handler(a))
	defer srv.Close()

	dom := runChromium(t, bin, srv.URL+"/", "--dump-dom")

	m := regexp.MustCompile(`<canvas id="map"[^>]*data-cells="(\d+)"[^>]*data-draws="(\d+)"`).FindSubmatch(dom)
	if m == nil {
		t.Fatalf("no canvas with data-cells in the DOM:\n%s", dom)
	}
	cells, _ := strconv.Atoi(string(m[1]))
	draws, _ := strconv.Atoi(string(m[2]))
	if cells != len(snap.Cells) || cells == 0 || draws < 1 {
		t.Errorf("canvas data-cells=%d data-draws=%d, want %d cells drawn at least once", cells, draws, len(snap.Cells))
	}
	for _, c := range snap.Countries {
		row := fmt.Sprintf(`<tr data-iso="%s"><td>%s</td><td>%s</td><td>%d</td><td>%d</td><td[^>]*>%d</td><td[^>]*>%d</td></tr>`,
			c.ISO, regexp.QuoteMeta(c.Name), c.ISO, c.Count, c.Decisions.Serve, c.Decisions.Redirect, c.Decisions.Deny)
		if !regexp.MustCompile(row).Match(dom) {
			t.Errorf("country table lacks the row for %s (%+v)", c.ISO, c)
		}
	}
	for id, want := range map[string]int64{"events": snap.Totals.Events, "refused": 20, "denied": snap.Totals.Denied, "redirected": snap.Totals.Redirected} {
		if !bytes.Contains(dom, fmt.Appendf(nil, `<b id="c-%s">%d</b>`, id, want)) {
			t.Errorf("counter %s not filled in with %d", id, want)
		}
	}
	if snap.Totals.Denied == 0 || snap.Totals.Redirected == 0 {
		t.Errorf("totals %+v: want denied and redirected clients from the default rules", snap.Totals)
	}
	if bytes.Contains(dom, []byte("unavailable")) {
		t.Errorf("page reports missing data or outlines")
	}
	if t.Failed() {
		t.Logf("DOM:\n%s", dom)
	}

	shot := filepath.Join(outputDir(t), "heatmap.png")
	runChromium(t, bin, srv.URL+"/", "--screenshot="+shot, "--window-size=1100,1000")
	f, err := os.Open(shot)
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	img, err := png.Decode(f)
	f.Close()
	if err != nil {
		t.Fatalf("screenshot %s: %v", shot, err)
	}
	if b := img.Bounds(); b.Dx() != 1100 || b.Dy() != 1000 {
		t.Errorf("screenshot is %v, want 1100x1000", b)
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
