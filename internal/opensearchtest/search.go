package opensearchtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"
)

// FailSearches makes the next n _search requests fail as a whole with 503.
func (s *Server) FailSearches(n int) { s.mu.Lock(); s.searchFail = n; s.mu.Unlock() }

// Searches returns the number of _search requests served.
func (s *Server) Searches() int { s.mu.Lock(); defer s.mu.Unlock(); return s.searches }

// storedDoc is one document as a search sees it.
type storedDoc struct {
	index, id string
	src       map[string]any
}

// serveSearch answers GET/POST <pattern>/_search with size 0 and the
// aggregations the heat map sends: terms, geotile_grid, geo_centroid,
// filter and top_hits, nested through "aggs", computed over the stored
// documents. Queries: match_all, range (dates, "now-<n><unit>" and RFC
// 3339), exists, term, and bool filter/must of those. Anything else is
// answered with OpenSearch's 400 error shape and recorded in Unhandled.
func (s *Server) serveSearch(w http.ResponseWriter, r *http.Request, pattern string) {
	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		writeError(w, 405, "illegal_argument_exception", "method not allowed")
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 10<<20))
	if err != nil {
		writeError(w, 400, "parse_exception", err.Error())
		return
	}
	if len(bytes.TrimSpace(body)) > 0 && !jsonContentType(r) {
		writeJSON(w, 406, map[string]any{"error": fmt.Sprintf("Content-Type header [%s] is not supported", r.Header.Get("Content-Type")), "status": 406})
		return
	}
	s.mu.Lock()
	s.searches++
	fail := s.searchFail > 0
	if fail {
		s.searchFail--
	}
	s.mu.Unlock()
	if fail {
		writeError(w, 503, "search_phase_execution_exception", "all shards failed")
		return
	}
	start := time.Now()
	var req struct {
		Size           *int                       `json:"size"`
		TrackTotalHits any                        `json:"track_total_hits"`
		Query          map[string]json.RawMessage `json:"query"`
		Aggs           map[string]json.RawMessage `json:"aggs"`
		Aggregations   map[string]json.RawMessage `json:"aggregations"`
	}
	if len(bytes.TrimSpace(body)) > 0 {
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			s.unhandledSearch(w, "parsing_exception", "search body: "+err.Error())
			return
		}
	}
	if req.Size != nil && *req.Size != 0 {
		s.unhandledSearch(w, "illegal_argument_exception", "the stand-in answers size 0 only")
		return
	}
	if req.Aggs == nil {
		req.Aggs = req.Aggregations
	}
	match, perr := parseQuery(req.Query, time.Now())
	if perr != nil {
		s.unhandledSearch(w, perr.typ, perr.reason)
		return
	}
	aggs, perr := parseAggs(req.Aggs)
	if perr != nil {
		s.unhandledSearch(w, perr.typ, perr.reason)
		return
	}

	patterns := strings.Split(pattern, ",")
	var docs []storedDoc
	matched := 0
	s.mu.Lock()
	for name, ix := range s.indices {
		if !matchAny(patterns, name) {
			continue
		}
		matched++
		for id, src := range ix.docs {
			var m map[string]any
			if json.Unmarshal(src, &m) == nil && match(m) {
				docs = append(docs, storedDoc{index: name, id: id, src: m})
			}
		}
	}
	s.mu.Unlock()
	if matched == 0 && !strings.ContainsAny(pattern, "*?") && r.URL.Query().Get("allow_no_indices") != "true" {
		writeJSON(w, 404, map[string]any{
			"error":  map[string]any{"type": "index_not_found_exception", "reason": "no such index [" + pattern + "]", "index": pattern},
			"status": 404,
		})
		return
	}
	sort.Slice(docs, func(i, j int) bool { // deterministic top_hits
		if docs[i].index != docs[j].index {
			return docs[i].index < docs[j].index
		}
		return docs[i].id < docs[j].id
	})
	resp := map[string]any{
		"took":      time.Since(start).Milliseconds(),
		"timed_out": false,
		"_shards":   map[string]int{"total": matched, "successful": matched, "skipped": 0, "failed": 0},
		"hits":      map[string]any{"total": map[string]any{"value": len(docs), "relation": "eq"}, "max_score": nil, "hits": []any{}},
	}
	if len(aggs) > 0 && matched > 0 {
		resp["aggregations"] = evalAggs(aggs, docs)
	}
	writeJSON(w, 200, resp)
}

func (s *Server) unhandledSearch(w http.ResponseWriter, typ, reason string) {
	s.mu.Lock()
	s.unhandled = append(s.unhandled, "_search: "+reason)
	s.mu.Unlock()
	writeError(w, 400, typ, reason)
}

func matchAny(patterns []string, name string) bool {
	for _, p := range patterns {
		if ok, _ := path.Match(strings.TrimSpace(p), name); ok {
			return true
		}
	}
	return false
}

// ---- queries ----

type docMatcher func(src map[string]any) bool

func parseQuery(q map[string]json.RawMessage, now time.Time) (docMatcher, *apiError) {
	if len(q) == 0 {
		return func(map[string]any) bool { return true }, nil
	}
	if len(q) != 1 {
		return nil, &apiError{"parsing_exception", "[query] takes one query, got " + strconv.Itoa(len(q))}
	}
	for typ, raw := range q {
		switch typ {
		case "match_all":
			return func(map[string]any) bool { return true }, nil
		case "exists":
			var e struct {
				Field string `json:"field"`
			}
			if err := json.Unmarshal(raw, &e); err != nil || e.Field == "" {
				return nil, &apiError{"parsing_exception", "[exists] needs a field"}
			}
			return func(src map[string]any) bool { return len(fieldValues(src, e.Field)) > 0 }, nil
		case "term":
			var t map[string]any
			if err := json.Unmarshal(raw, &t); err != nil || len(t) != 1 {
				return nil, &apiError{"parsing_exception", "[term] takes one field"}
			}
			for f, v := range t {
				if o, ok := v.(map[string]any); ok {
					v = o["value"]
				}
				want := fmt.Sprint(v)
				return func(src map[string]any) bool {
					for _, got := range fieldValues(src, f) {
						if fmt.Sprint(got) == want {
							return true
						}
					}
					return false
				}, nil
			}
		case "range":
			var rg map[string]map[string]any
			if err := json.Unmarshal(raw, &rg); err != nil || len(rg) != 1 {
				return nil, &apiError{"parsing_exception", "[range] takes one field"}
			}
			for f, bounds := range rg {
				type bound struct {
					op string
					t  time.Time
				}
				var bs []bound
				for op, v := range bounds {
					sv, ok := v.(string)
					if !ok {
						return nil, &apiError{"parsing_exception", "[range] the stand-in compares dates only"}
					}
					t, ok := parseDateMath(sv, now)
					if !ok {
						return nil, &apiError{"parse_exception", fmt.Sprintf("failed to parse date field [%s]", sv)}
					}
					switch op {
					case "gte", "gt", "lte", "lt":
						bs = append(bs, bound{op, t})
					default:
						return nil, &apiError{"parsing_exception", "[range] query does not support [" + op + "]"}
					}
				}
				return func(src map[string]any) bool {
					for _, v := range fieldValues(src, f) {
						sv, _ := v.(string)
						t, err := time.Parse(time.RFC3339Nano, sv)
						if err != nil {
							continue
						}
						ok := true
						for _, b := range bs {
							switch b.op {
							case "gte":
								ok = ok && !t.Before(b.t)
							case "gt":
								ok = ok && t.After(b.t)
							case "lte":
								ok = ok && !t.After(b.t)
							case "lt":
								ok = ok && t.Before(b.t)
							}
						}
						if ok {
							return true
						}
					}
					return false
				}, nil
			}
		case "bool":
			var b map[string]json.RawMessage
			if err := json.Unmarshal(raw, &b); err != nil {
				return nil, &apiError{"parsing_exception", "[bool] " + err.Error()}
			}
			var all []docMatcher
			for occ, clauses := range b {
				if occ != "filter" && occ != "must" {
					return nil, &apiError{"parsing_exception", "[bool] the stand-in supports filter and must only, not [" + occ + "]"}
				}
				var list []map[string]json.RawMessage
				if err := json.Unmarshal(clauses, &list); err != nil {
					var one map[string]json.RawMessage
					if err := json.Unmarshal(clauses, &one); err != nil {
						return nil, &apiError{"parsing_exception", "[bool] [" + occ + "] " + err.Error()}
					}
					list = append(list, one)
				}
				for _, c := range list {
					m, perr := parseQuery(c, now)
					if perr != nil {
						return nil, perr
					}
					all = append(all, m)
				}
			}
			return func(src map[string]any) bool {
				for _, m := range all {
					if !m(src) {
						return false
					}
				}
				return true
			}, nil
		}
		return nil, &apiError{"parsing_exception", "unknown query [" + typ + "] (or not implemented by the stand-in)"}
	}
	return nil, nil // unreachable
}

// parseDateMath reads "now", "now-<n><s|m|h|d>" or an RFC 3339 date.
func parseDateMath(s string, now time.Time) (time.Time, bool) {
	if s == "now" {
		return now, true
	}
	if rest, ok := strings.CutPrefix(s, "now-"); ok && len(rest) > 1 {
		n, err := strconv.Atoi(rest[:len(rest)-1])
		if err != nil || n < 0 {
			return time.Time{}, false
		}
		unit := map[byte]time.Duration{'s': time.Second, 'm': time.Minute, 'h': time.Hour, 'd': 24 * time.Hour}[rest[len(rest)-1]]
		if unit == 0 {
			return time.Time{}, false
		}
		return now.Add(-time.Duration(n) * unit), true
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	return t, err == nil
}

// fieldValues returns the values at a dotted path; arrays are flattened,
// as OpenSearch indexes them.
func fieldValues(src map[string]any, field string) []any {
	var cur []any = []any{src}
	for _, part := range strings.Split(field, ".") {
		var next []any
		for _, c := range cur {
			m, ok := c.(map[string]any)
			if !ok {
				continue
			}
			v, ok := m[part]
			if !ok || v == nil {
				continue
			}
			if a, ok := v.([]any); ok {
				next = append(next, a...)
			} else {
				next = append(next, v)
			}
		}
		cur = next
	}
	return cur
}

// ---- aggregations ----

type aggSpec struct {
	typ  string
	body map[string]any
	raw  json.RawMessage
	subs map[string]*aggSpec
}

func parseAggs(raw map[string]json.RawMessage) (map[string]*aggSpec, *apiError) {
	out := map[string]*aggSpec{}
	for name, r := range raw {
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(r, &obj); err != nil {
			return nil, &apiError{"parsing_exception", "aggregation [" + name + "]: " + err.Error()}
		}
		a := &aggSpec{}
		for k, v := range obj {
			switch k {
			case "aggs", "aggregations":
				var sub map[string]json.RawMessage
				if err := json.Unmarshal(v, &sub); err != nil {
					return nil, &apiError{"parsing_exception", "aggregation [" + name + "] sub-aggregations: " + err.Error()}
				}
				subs, perr := parseAggs(sub)
				if perr != nil {
					return nil, perr
				}
				a.subs = subs
			case "terms", "geotile_grid", "geo_centroid", "filter", "top_hits":
				if a.typ != "" {
					return nil, &apiError{"parsing_exception", "Found two aggregation type definitions in [" + name + "]: [" + a.typ + "] and [" + k + "]"}
				}
				a.typ, a.raw = k, v
				if err := json.Unmarshal(v, &a.body); err != nil {
					return nil, &apiError{"parsing_exception", "aggregation [" + name + "]: " + err.Error()}
				}
			default:
				return nil, &apiError{"parsing_exception", "Unknown aggregation type [" + k + "] did you mean [terms]? (or not implemented by the stand-in)"}
			}
		}
		if a.typ == "" {
			return nil, &apiError{"parsing_exception", "Missing definition for aggregation [" + name + "]"}
		}
		if f, _ := a.body["field"].(string); f == "" && a.typ != "filter" && a.typ != "top_hits" {
			return nil, &apiError{"illegal_argument_exception", "Required [field] for aggregation [" + name + "]"}
		}
		if a.typ == "filter" {
			var q map[string]json.RawMessage
			_ = json.Unmarshal(a.raw, &q)
			if _, perr := parseQuery(q, time.Now()); perr != nil {
				return nil, perr
			}
		}
		out[name] = a
	}
	return out, nil
}

func evalAggs(aggs map[string]*aggSpec, docs []storedDoc) map[string]any {
	out := map[string]any{}
	for name, a := range aggs {
		out[name] = evalAgg(a, docs)
	}
	return out
}

func intParam(body map[string]any, key string, def int) int {
	if f, ok := body[key].(float64); ok && f >= 0 {
		return int(f)
	}
	return def
}

type bucket struct {
	key  string
	docs []storedDoc
}

// sortBuckets orders as OpenSearch does by default: most documents first,
// then by key.
func sortBuckets(bs []*bucket) {
	sort.Slice(bs, func(i, j int) bool {
		if len(bs[i].docs) != len(bs[j].docs) {
			return len(bs[i].docs) > len(bs[j].docs)
		}
		return bs[i].key < bs[j].key
	})
}

func (a *aggSpec) bucketJSON(key string, docs []storedDoc) map[string]any {
	m := map[string]any{"key": key, "doc_count": len(docs)}
	for name, sub := range a.subs {
		m[name] = evalAgg(sub, docs)
	}
	return m
}

func evalAgg(a *aggSpec, docs []storedDoc) any {
	field, _ := a.body["field"].(string)
	switch a.typ {
	case "terms":
		size := intParam(a.body, "size", 10)
		groups := map[string]*bucket{}
		for _, d := range docs {
			seen := map[string]bool{}
			for _, v := range fieldValues(d.src, field) {
				var k string
				switch x := v.(type) {
				case string:
					k = x
				case float64:
					k = strconv.FormatFloat(x, 'f', -1, 64)
				case bool:
					k = strconv.FormatBool(x)
				default:
					continue
				}
				if seen[k] {
					continue
				}
				seen[k] = true
				if groups[k] == nil {
					groups[k] = &bucket{key: k}
				}
				groups[k].docs = append(groups[k].docs, d)
			}
		}
		var bs []*bucket
		for _, b := range groups {
			bs = append(bs, b)
		}
		sortBuckets(bs)
		other := 0
		for _, b := range bs[min(size, len(bs)):] {
			other += len(b.docs)
		}
		out := []any{}
		for _, b := range bs[:min(size, len(bs))] {
			out = append(out, a.bucketJSON(b.key, b.docs))
		}
		return map[string]any{"doc_count_error_upper_bound": 0, "sum_other_doc_count": other, "buckets": out}
	case "geotile_grid":
		precision := intParam(a.body, "precision", 7)
		if precision > 29 {
			precision = 29
		}
		size := intParam(a.body, "size", 10000)
		groups := map[string]*bucket{}
		for _, d := range docs {
			for _, v := range fieldValues(d.src, field) {
				lat, lon, ok := geoPoint(v)
				if !ok {
					continue
				}
				k := geotileKey(lat, lon, precision)
				if groups[k] == nil {
					groups[k] = &bucket{key: k}
				}
				groups[k].docs = append(groups[k].docs, d)
				break
			}
		}
		var bs []*bucket
		for _, b := range groups {
			bs = append(bs, b)
		}
		sortBuckets(bs)
		out := []any{}
		for _, b := range bs[:min(size, len(bs))] {
			out = append(out, a.bucketJSON(b.key, b.docs))
		}
		return map[string]any{"buckets": out}
	case "geo_centroid":
		var sumLat, sumLon float64
		n := 0
		for _, d := range docs {
			for _, v := range fieldValues(d.src, field) {
				if lat, lon, ok := geoPoint(v); ok {
					sumLat, sumLon = sumLat+lat, sumLon+lon
					n++
				}
			}
		}
		if n == 0 {
			return map[string]any{"count": 0}
		}
		return map[string]any{"location": map[string]any{"lat": sumLat / float64(n), "lon": sumLon / float64(n)}, "count": n}
	case "filter":
		var q map[string]json.RawMessage
		_ = json.Unmarshal(a.raw, &q)
		match, _ := parseQuery(q, time.Now()) // checked in parseAggs
		var in []storedDoc
		for _, d := range docs {
			if match(d.src) {
				in = append(in, d)
			}
		}
		m := map[string]any{"doc_count": len(in)}
		for name, sub := range a.subs {
			m[name] = evalAgg(sub, in)
		}
		return m
	case "top_hits":
		size := intParam(a.body, "size", 3)
		var includes []string
		if src, ok := a.body["_source"].(map[string]any); ok {
			if inc, ok := src["includes"].([]any); ok {
				for _, f := range inc {
					if s, ok := f.(string); ok {
						includes = append(includes, s)
					}
				}
			}
		}
		hits := []any{}
		for _, d := range docs[:min(size, len(docs))] {
			src := d.src
			if includes != nil {
				src = filterSource(d.src, includes)
			}
			hits = append(hits, map[string]any{"_index": d.index, "_id": d.id, "_score": nil, "_source": src})
		}
		return map[string]any{"hits": map[string]any{"total": map[string]any{"value": len(docs), "relation": "eq"}, "max_score": nil, "hits": hits}}
	}
	return nil
}

// geoPoint reads a geo_point in the object, "lat,lon" string or [lon, lat]
// array form.
func geoPoint(v any) (lat, lon float64, ok bool) {
	switch x := v.(type) {
	case map[string]any:
		la, ok1 := x["lat"].(float64)
		lo, ok2 := x["lon"].(float64)
		return la, lo, ok1 && ok2
	case string:
		a, b, found := strings.Cut(x, ",")
		if !found {
			return 0, 0, false
		}
		la, err1 := strconv.ParseFloat(strings.TrimSpace(a), 64)
		lo, err2 := strconv.ParseFloat(strings.TrimSpace(b), 64)
		return la, lo, err1 == nil && err2 == nil
	}
	return 0, 0, false
}

// geotileKey is OpenSearch's geotile_grid key "zoom/x/y": Web Mercator
// tiles, latitudes clamped to ±85.0511287798066.
func geotileKey(lat, lon float64, zoom int) string {
	const maxLat = 85.0511287798066
	lat = math.Max(-maxLat, math.Min(maxLat, lat))
	tiles := float64(int64(1) << zoom)
	x := math.Floor((lon + 180) / 360 * tiles)
	r := lat * math.Pi / 180
	y := math.Floor((1 - math.Log(math.Tan(r)+1/math.Cos(r))/math.Pi) / 2 * tiles)
	clamp := func(v float64) int64 { return int64(math.Max(0, math.Min(tiles-1, v))) }
	return fmt.Sprintf("%d/%d/%d", zoom, clamp(x), clamp(y))
}

// filterSource keeps only the dotted paths of includes.
func filterSource(src map[string]any, includes []string) map[string]any {
	out := map[string]any{}
	for _, inc := range includes {
		parts := strings.Split(inc, ".")
		var cur any = src
		for _, p := range parts {
			m, ok := cur.(map[string]any)
			if !ok {
				cur = nil
				break
			}
			cur = m[p]
		}
		if cur == nil {
			continue
		}
		dst := out
		for _, p := range parts[:len(parts)-1] {
			next, ok := dst[p].(map[string]any)
			if !ok {
				next = map[string]any{}
				dst[p] = next
			}
			dst = next
		}
		dst[parts[len(parts)-1]] = cur
	}
	return out
}
