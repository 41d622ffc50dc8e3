// Package heatmap serves the live heat-map page of cmd/ingest and its data,
// /api/heatmap (optionally ?transport=tcp|udp): connection density by
// location with the residency decisions per cell, a table by country with
// the decisions, and counters (refused connections apart from unplaced
// clients).
//
// The data comes from a [Source]: the in-memory [Aggregator] of what the
// ingest consumed, or [OpenSearchSource], aggregations over the indexed
// events. The page and its vendored assets (Natural Earth country outlines
// from the npm package world-atlas, the TopoJSON decoder topojson-client;
// see assets/NOTICE) are embedded: the page makes no request outside the
// server that serves it.
package heatmap

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"time"
)

// Snapshot is the JSON document of /api/heatmap.
type Snapshot struct {
	// Source names where the data comes from: "memory" or "opensearch".
	Source string `json:"source"`
	// Note, when set, says why the data comes from a fallback source.
	Note string `json:"note,omitempty"`
	// Transport is the transport the snapshot is limited to ("tcp",
	// "udp"); empty: every event.
	Transport string `json:"transport,omitempty"`
	// GeneratedAt is when the snapshot was taken.
	GeneratedAt time.Time `json:"generated_at"`
	// Cells is the connection density: one entry per grid cell that holds
	// located decided connections (see [Totals]), at the centroid of its
	// events, most connections first, with the decisions in the cell.
	Cells []Cell `json:"cells"`
	// Countries counts the decided connections per client country, most
	// first.
	Countries []Country `json:"countries"`
	// Totals are the counters over every event, located or not.
	Totals Totals `json:"totals"`
}

// Cell is one grid cell of the heat layer and of the decision layers.
// Count is every decided connection in the cell; Decisions splits it (a
// decision this version does not know counts in Count only).
type Cell struct {
	Lat       float64   `json:"lat"`
	Lon       float64   `json:"lon"`
	Count     int64     `json:"count"`
	Decisions Decisions `json:"decisions"`
}

// Country is one row of the country table.
type Country struct {
	ISO       string    `json:"iso"`  // ISO 3166-1 alpha-2
	Name      string    `json:"name"` // English name, as the GeoIP database had it
	Count     int64     `json:"count"`
	Decisions Decisions `json:"decisions"`
}

// Decisions counts residency decisions (residency.decision).
type Decisions struct {
	Serve    int64 `json:"serve"`
	Redirect int64 `json:"redirect"`
	Deny     int64 `json:"deny"`
}

// Totals are the page's counters. Served + Redirected + Denied + Refused +
// Other = Events.
//
// A decided connection is one the residency rules answered (it has a
// residency.decision: serve, redirect or deny). Only decided connections
// are clients with a place: they fill Cells and Countries, and those
// without a country are Unplaced, so that the sum of the country counts
// plus Unplaced is the number of decided connections. A refused connection
// (no trusted client address: a spoofed or broken PROXY header, a limit)
// is never unplaced: it counts in Refused only, as the demo's summary
// counts it.
type Totals struct {
	Events     int64 `json:"events"`     // events counted
	Served     int64 `json:"served"`     // connection-closed, not redirected
	Redirected int64 `json:"redirected"` // connection-closed with decision redirect
	Denied     int64 `json:"denied"`     // connection-denied
	Refused    int64 `json:"refused"`    // connection-refused (PROXY errors, spoofs, limits)
	Other      int64 `json:"other"`      // an event.action this version does not know
	Located    int64 `json:"located"`    // decided connections with a location (in Cells)
	Unplaced   int64 `json:"unplaced"`   // decided connections without a country (loopback, documentation, unknown)
}

// Transports a [Filter] can select (the event's network.transport).
const (
	TransportTCP = "tcp"
	TransportUDP = "udp"
)

// Filter selects the events of a snapshot. The zero value selects every
// event.
type Filter struct {
	// Transport limits the snapshot to one network.transport
	// ([TransportTCP] or [TransportUDP]); empty: every transport.
	Transport string
}

// parseFilter reads a Filter from /api/heatmap's query: transport=tcp|udp
// (empty or absent: all).
func parseFilter(q url.Values) (Filter, error) {
	var f Filter
	switch t := q.Get("transport"); t {
	case "", TransportTCP, TransportUDP:
		f.Transport = t
	default:
		return Filter{}, fmt.Errorf("transport=%.20q: want tcp, udp or nothing (all)", t)
	}
	return f, nil
}

// Source answers /api/heatmap; the [Aggregator] is one, [OpenSearchSource]
// another. Implementations must be safe for concurrent use: the handler
// calls Snapshot once per request.
type Source interface {
	// Snapshot returns the current aggregation of the events f selects. It
	// may block until ctx is done (an OpenSearch query); it returns ctx's
	// error then.
	Snapshot(ctx context.Context, f Filter) (Snapshot, error)
}

//go:embed assets/index.html assets/heatmap.js assets/countries-110m.json assets/topojson-client.min.js assets/NOTICE assets/LICENSE.*
var assets embed.FS

// Option configures [Handler].
type Option func(*handler)

// WithLogger logs the errors of the source (the client sees only that the
// data is unavailable). The default is [slog.Default].
func WithLogger(l *slog.Logger) Option { return func(h *handler) { h.log = l } }

// WithTimeout bounds each call to the source (default 10s).
func WithTimeout(d time.Duration) Option { return func(h *handler) { h.timeout = d } }

type handler struct {
	src     Source
	log     *slog.Logger
	timeout time.Duration
}

// Handler returns the page ("/"), its assets ("/assets/...") and the data
// ("/api/heatmap"). Only GET and HEAD are served. The handler is safe for
// concurrent use.
func Handler(src Source, opts ...Option) http.Handler {
	h := &handler{src: src, log: slog.Default(), timeout: 10 * time.Second}
	for _, o := range opts {
		o(h)
	}
	sub, err := fs.Sub(assets, "assets")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	mux := http.NewServeMux()
	mux.Handle("GET /assets/", http.StripPrefix("/assets/", http.FileServerFS(sub)))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		setPageHeaders(w)
		http.ServeFileFS(w, r, sub, "index.html")
	})
	mux.HandleFunc("GET /api/heatmap", h.serveData)
	return mux
}

// setPageHeaders forbids any request outside this server: the page needs
// none, and the browser test relies on it.
func setPageHeaders(w http.ResponseWriter) {
	w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'")
	w.Header().Set("X-Content-Type-Options", "nosniff")
}

func (h *handler) serveData(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	f, err := parseFilter(r.URL.Query())
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.timeout)
	defer cancel()
	snap, err := h.src.Snapshot(ctx, f)
	if err != nil {
		if !errors.Is(err, context.Canceled) {
			h.log.Warn("heat-map data unavailable", "err", err)
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": "heat-map data unavailable"})
		return
	}
	if snap.Cells == nil {
		snap.Cells = []Cell{}
	}
	if snap.Countries == nil {
		snap.Countries = []Country{}
	}
	_ = json.NewEncoder(w).Encode(snap)
}

// Fallback returns a Source that answers from primary and, when primary
// fails (but ctx is not done), from secondary, noting primary's failure in
// Snapshot.Note. The page then keeps showing data, and says where it comes
// from. cmd/ingest uses it with OpenSearch aggregations first and its
// in-memory [Aggregator] second.
func Fallback(primary, secondary Source) Source { return fallback{primary, secondary} }

type fallback struct{ primary, secondary Source }

func (f fallback) Snapshot(ctx context.Context, fl Filter) (Snapshot, error) {
	s, err := f.primary.Snapshot(ctx, fl)
	if err == nil || ctx.Err() != nil {
		return s, err
	}
	s, err2 := f.secondary.Snapshot(ctx, fl)
	if err2 != nil {
		return Snapshot{}, errors.Join(err, err2)
	}
	s.Note = "primary source unavailable; showing " + s.Source
	return s, nil
}
