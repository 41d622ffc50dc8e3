// Package heatmap serves the live heat-map page of cmd/ingest and its data,
// /api/heatmap: connection density by location, a table by country with the
// residency decision, and counters.
//
// CONTRACT STUB: the signatures below are the contract cmd/ingest builds
// against; the implementation is issue #9's.
package heatmap

import (
	"net/http"

	"github.com/originlens/originlens/internal/event"
)

// Aggregator keeps an in-memory aggregation of the events ingest consumed.
// It is safe for concurrent use.
type Aggregator struct{}

// NewAggregator returns an empty aggregator.
func NewAggregator() *Aggregator { return &Aggregator{} }

// Add counts one event. It does not block.
func (a *Aggregator) Add(ev *event.Event) {}

// Source answers /api/heatmap; the aggregator is one, OpenSearch
// aggregations another.
type Source interface{}

// Handler returns the page ("/") and the data ("/api/heatmap").
func Handler(src Source) http.Handler { return http.NotFoundHandler() }
