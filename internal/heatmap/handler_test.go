package heatmap_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/originlens/originlens/internal/event"
	"github.com/originlens/originlens/internal/heatmap"
)

// demoAggregator returns an aggregator fed with events from several
// countries, as the demo's traffic produces them.
func demoAggregator(tb testing.TB) *heatmap.Aggregator {
	tb.Helper()
	a := heatmap.NewAggregator()
	type c struct {
		iso, name, decision string
		lat, lon            float64
		n                   int
	}
	for _, c := range []c{
		{"US", "United States", "serve", 37.75, -122.42, 40},
		{"BR", "Brazil", "serve", -23.55, -46.63, 25},
		{"DE", "Germany", "redirect", 50.11, 8.68, 30},
		{"FR", "France", "redirect", 48.86, 2.35, 20},
		{"JP", "Japan", "serve", 35.68, 139.69, 35},
		{"AU", "Australia", "serve", -33.87, 151.21, 15},
		{"IN", "India", "serve", 19.08, 72.88, 25},
		{"ZA", "South Africa", "serve", -26.20, 28.05, 10},
		{"KP", "North Korea", "deny", 39.03, 125.75, 5},
	} {
		action := event.ActionClosed
		if c.decision == "deny" {
			action = event.ActionDenied
		}
		for i := range c.n {
			a.Add(ev(tb, c.iso, c.name, c.lat+float64(i%3)/10, c.lon+float64(i%4)/10, action, c.decision))
		}
	}
	for range 7 {
		a.Add(ev(tb, "", "", 0, 0, event.ActionRefused, ""))
	}
	return a
}

func get(tb testing.TB, url string) (*http.Response, string) {
	tb.Helper()
	res, err := http.Get(url)
	if err != nil {
		tb.Fatalf("GET %s: %v", url, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		tb.Fatalf("GET %s: reading body: %v", url, err)
	}
	return res, string(b)
}

func TestHandlerData(t *testing.T) {
	a := demoAggregator(t)
	srv := httptest.NewServer(heatmap.Handler(a))
	defer srv.Close()

	res, body := get(t, srv.URL+"/api/heatmap")
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET /api/heatmap = %d %q, want 200 application/json", res.StatusCode, res.Header.Get("Content-Type"))
	}
	var got heatmap.Snapshot
	dec := json.NewDecoder(strings.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("decoding /api/heatmap: %v\n%s", err, body)
	}
	want := snapshot(t, a)
	if diff := cmp.Diff(want, got, cmpopts.IgnoreFields(heatmap.Snapshot{}, "GeneratedAt")); diff != "" {
		t.Errorf("/api/heatmap differs from Snapshot (-want +got):\n%s", diff)
	}
	if got.Totals.Events != 212 || got.Totals.Refused != 7 || len(got.Countries) != 9 {
		t.Errorf("totals %+v with %d countries, want 212 events, 7 refused, 9 countries", got.Totals, len(got.Countries))
	}
	// The JSON keys are the page's contract.
	for _, key := range []string{`"cells":[{"lat":`, `"countries":[{"iso":"US","name":"United States","count":40,"decisions":{"serve":40,"redirect":0,"deny":0}}`, `"totals":{"events":212,`} {
		if !strings.Contains(body, key) {
			t.Errorf("/api/heatmap body lacks %s:\n%s", key, body)
		}
	}
}

func TestHandlerEmptyIsArrays(t *testing.T) {
	srv := httptest.NewServer(heatmap.Handler(heatmap.NewAggregator()))
	defer srv.Close()
	_, body := get(t, srv.URL+"/api/heatmap")
	if !strings.Contains(body, `"cells":[]`) || !strings.Contains(body, `"countries":[]`) {
		t.Errorf("empty /api/heatmap = %s, want empty arrays, not null", body)
	}
}

type failingSource struct{ err error }

func (f failingSource) Snapshot(context.Context, heatmap.Filter) (heatmap.Snapshot, error) {
	return heatmap.Snapshot{}, f.err
}

func TestHandlerSourceError(t *testing.T) {
	var logs strings.Builder
	h := heatmap.Handler(failingSource{errors.New("searching conn-events-*: dial tcp 10.1.2.3:9200: refused")},
		heatmap.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	srv := httptest.NewServer(h)
	defer srv.Close()
	res, body := get(t, srv.URL+"/api/heatmap")
	if res.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("status = %d, want 503", res.StatusCode)
	}
	if strings.Contains(body, "10.1.2.3") || !strings.Contains(body, "unavailable") {
		t.Errorf("body = %s, want a generic error without internals", body)
	}
	if !strings.Contains(logs.String(), "10.1.2.3") {
		t.Errorf("log = %q, want the cause logged", logs.String())
	}
}

func TestHandlerPageAndAssets(t *testing.T) {
	srv := httptest.NewServer(heatmap.Handler(heatmap.NewAggregator()))
	defer srv.Close()
	tests := []struct {
		path, wantType, wantBody string
		wantStatus               int
	}{
		{"/", "text/html; charset=utf-8", `<canvas id="map"`, 200},
		{"/assets/heatmap.js", "text/javascript; charset=utf-8", "api/heatmap", 200},
		{"/assets/topojson-client.min.js", "text/javascript; charset=utf-8", "topojson", 200},
		{"/assets/countries-110m.json", "application/json", `"Topology"`, 200},
		{"/assets/NOTICE", "", "Natural Earth", 200},
		{"/assets/LICENSE.world-atlas", "", "Michael Bostock", 200},
		{"/nope", "", "404", 404},
		{"/assets/heatmap.go", "", "404", 404},
	}
	for _, tt := range tests {
		res, body := get(t, srv.URL+tt.path)
		if res.StatusCode != tt.wantStatus || !strings.Contains(body, tt.wantBody) {
			t.Errorf("GET %s = %d (%d bytes), want %d containing %q", tt.path, res.StatusCode, len(body), tt.wantStatus, tt.wantBody)
		}
		if tt.wantType != "" && res.Header.Get("Content-Type") != tt.wantType {
			t.Errorf("GET %s Content-Type = %q, want %q", tt.path, res.Header.Get("Content-Type"), tt.wantType)
		}
	}
	res, _ := get(t, srv.URL+"/")
	if csp := res.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
		t.Errorf("page CSP = %q, want default-src 'self'", csp)
	}
	post, err := http.Post(srv.URL+"/api/heatmap", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	post.Body.Close()
	if post.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /api/heatmap = %d, want 405", post.StatusCode)
	}
}

func TestFallback(t *testing.T) {
	a := demoAggregator(t)
	down := failingSource{errors.New("opensearch down")}
	tests := []struct {
		name       string
		src        heatmap.Source
		wantSource string
		wantNote   bool
		wantErr    bool
	}{
		{"primary_ok", heatmap.Fallback(a, down), "memory", false, false},
		{"primary_down", heatmap.Fallback(down, a), "memory", true, false},
		{"both_down", heatmap.Fallback(down, down), "", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := tt.src.Snapshot(context.Background(), heatmap.Filter{})
			if (err != nil) != tt.wantErr || s.Source != tt.wantSource || (s.Note != "") != tt.wantNote {
				t.Errorf("Snapshot() = source %q note %q, %v; want source %q, note %v, error %v", s.Source, s.Note, err, tt.wantSource, tt.wantNote, tt.wantErr)
			}
			if err == nil && s.Totals.Events != 212 {
				t.Errorf("Snapshot() events = %d, want the aggregator's 212", s.Totals.Events)
			}
		})
	}
	// A cancelled request does not fall back.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := heatmap.Fallback(failingSource{context.Canceled}, a).Snapshot(ctx, heatmap.Filter{}); err == nil {
		t.Errorf("Fallback with a cancelled ctx answered from the secondary")
	}
}
