// Package dashboards holds the OpenSearch Dashboards saved objects of
// originlens as NDJSON (the format of Dashboards' export and import): the
// conn-events-* index pattern, a coordinate-map heat map of
// source.geo.location (geohash grid), connections by country, by residency
// decision and over time, top client networks, TCP connections beside UDP
// flows (by network.transport, over time, and a transport filter control),
// and the dashboard that holds them. cmd/ingest imports them with POST /api/saved_objects/_import.
package dashboards

import (
	"embed"
	"io/fs"
	"sort"
)

//go:embed *.ndjson
var files embed.FS

// File is one NDJSON file.
type File struct {
	Name string
	Data []byte
}

// Files returns the embedded NDJSON files, sorted by name.
func Files() []File {
	names, _ := fs.Glob(files, "*.ndjson")
	sort.Strings(names)
	out := make([]File, 0, len(names))
	for _, n := range names {
		b, err := files.ReadFile(n)
		if err != nil {
			panic(err) // embedded: cannot fail
		}
		out = append(out, File{Name: n, Data: b})
	}
	return out
}
