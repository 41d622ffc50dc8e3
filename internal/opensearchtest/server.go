// Package opensearchtest is an in-process stand-in for the parts of the
// OpenSearch and OpenSearch Dashboards REST APIs that cmd/ingest calls,
// for tests and benchmarks on machines where no cluster can run.
//
// It is honest about shapes: _bulk checks the content type, the NDJSON
// framing (action line, source line, trailing newline) and answers with the
// documented per-item results (status, _id, result, error {type, reason},
// the top-level errors flag; 409 version_conflict_engine_exception for a
// duplicate create). Composable index templates are validated and applied:
// an index created from a template with dynamic: strict answers an
// unmapped field with a 400 strict_dynamic_mapping_exception item, and a
// value that does not fit its mapped type (ip, date, geo_point, numbers)
// with a 400 mapper_parsing_exception item. ISM policies honour
// if_seq_no/if_primary_term. Dashboards' saved-object import requires the
// osd-xsrf header and a multipart .ndjson file.
// The security plugin's roles and role mappings (GET, PUT; PATCH with a
// JSON Patch) are kept so a test can see what a role mapping became.
//
// _search answers size-0 searches with the aggregations cmd/ingest's heat
// map sends (terms, geotile_grid, geo_centroid, filter, top_hits) computed
// over the stored documents, in the documented response shapes.
//
// Faults can be injected: 429 on a fraction of items, 503 on whole
// requests (bulk or search), slow answers, and a write block (the
// flood-stage cluster_block_exception). Documents are stored by index and _id so tests
// can count them.
//
// A Server is safe for concurrent use.
package opensearchtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"mime"
	"net/http"
	"net/http/httptest"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Server is the stand-in. Create it with [NewServer] or [NewUnstarted].
type Server struct {
	*httptest.Server

	mu        sync.Mutex
	templates map[string]*indexTemplate
	indices   map[string]*index
	policies  map[string]*policy
	objects   map[string]json.RawMessage // saved objects by type/id
	roles     map[string]*secRole        // security plugin roles (lazily, see secInit)
	mappings  map[string]*SecMapping     // security plugin role mappings
	seqNo     int64
	rng       *rand.Rand

	// faults
	rejectRate  float64       // fraction of bulk items answered 429
	unavailable int           // next N bulk requests answered 503
	delay       time.Duration // added to every bulk answer
	blockStatus int           // 0, or the status of write-blocked items (403 or 429)
	fast        bool          // skip source validation (benchmarks)
	maxBody     int           // http.max_content_length; 0: 100 MiB
	searchFail  int           // next N _search requests answered 503

	// counters
	bulkRequests  int
	itemsRejected int
	conflicts     int
	searches      int
	unhandled     []string
}

type indexTemplate struct {
	Name     string
	Patterns []string
	Priority int
	Mapping  *objectMapping // nil: no mappings
	Raw      json.RawMessage
}

type index struct {
	mapping *objectMapping // nil: dynamic, anything goes
	docs    map[string][]byte
}

type policy struct {
	body        json.RawMessage
	seqNo       int64
	primaryTerm int64
	version     int64
}

// NewServer starts a stand-in on a loopback port.
func NewServer() *Server {
	s := NewUnstarted()
	s.Start()
	return s
}

// NewUnstarted returns a stand-in that is not listening yet: set
// s.Listener or s.Config before Start.
func NewUnstarted() *Server {
	s := &Server{
		templates: map[string]*indexTemplate{},
		indices:   map[string]*index{},
		policies:  map[string]*policy{},
		objects:   map[string]json.RawMessage{},
		rng:       rand.New(rand.NewPCG(1, 2)),
	}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(s.serveHTTP))
	return s
}

// SetRejectRate makes a fraction p (0..1) of bulk items fail with 429
// es_rejected_execution_exception.
func (s *Server) SetRejectRate(p float64) { s.mu.Lock(); s.rejectRate = p; s.mu.Unlock() }

// FailRequests makes the next n bulk requests fail as a whole with 503.
func (s *Server) FailRequests(n int) { s.mu.Lock(); s.unavailable = n; s.mu.Unlock() }

// SetDelay delays every bulk answer by d.
func (s *Server) SetDelay(d time.Duration) { s.mu.Lock(); s.delay = d; s.mu.Unlock() }

// SetWriteBlock blocks writes as the flood-stage watermark does: every
// bulk item fails with a cluster_block_exception and the given status
// (403 as in older versions, 429 as in current ones). 0 lifts the block.
func (s *Server) SetWriteBlock(status int) { s.mu.Lock(); s.blockStatus = status; s.mu.Unlock() }

// SetMaxContentLength answers bulk bodies above n bytes with 413, as
// http.max_content_length does (Amazon OpenSearch Service: 10 MiB on small
// instance types). 0 restores the default, 100 MiB.
func (s *Server) SetMaxContentLength(n int) { s.mu.Lock(); s.maxBody = n; s.mu.Unlock() }

// SetFast skips the validation of document sources against the mapping
// (action lines are still checked). For benchmarks only.
func (s *Server) SetFast(fast bool) { s.mu.Lock(); s.fast = fast; s.mu.Unlock() }

// Count returns the number of documents in indices whose name matches the
// glob pattern (path.Match syntax, e.g. "conn-events-*").
func (s *Server) Count(pattern string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for name, ix := range s.indices {
		if ok, _ := path.Match(pattern, name); ok {
			n += len(ix.docs)
		}
	}
	return n
}

// IDs returns how many times each _id occurs across the indices matching
// pattern.
func (s *Server) IDs(pattern string) map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]int{}
	for name, ix := range s.indices {
		if ok, _ := path.Match(pattern, name); ok {
			for id := range ix.docs {
				out[id]++
			}
		}
	}
	return out
}

// Doc returns the stored source of one document.
func (s *Server) Doc(indexName, id string) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ix, ok := s.indices[indexName]
	if !ok {
		return nil, false
	}
	d, ok := ix.docs[id]
	return d, ok
}

// Indices returns the names of the existing indices, sorted.
func (s *Server) Indices() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for n := range s.indices {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Template returns the stored body of an index template.
func (s *Server) Template(name string) (json.RawMessage, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.templates[name]
	if !ok {
		return nil, false
	}
	return t.Raw, true
}

// Policy returns the stored body of an ISM policy and its version.
func (s *Server) Policy(id string) (json.RawMessage, int64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.policies[id]
	if !ok {
		return nil, 0, false
	}
	return p.body, p.version, true
}

// SavedObject returns an imported Dashboards saved object.
func (s *Server) SavedObject(typ, id string) (json.RawMessage, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.objects[typ+"/"+id]
	return o, ok
}

// Stats returns the number of bulk requests served and of items rejected
// with 429.
func (s *Server) Stats() (bulkRequests, itemsRejected int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bulkRequests, s.itemsRejected
}

// Conflicts returns the number of creates answered 409 because the _id
// existed: redeliveries.
func (s *Server) Conflicts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conflicts
}

// Unhandled lists the requests ("METHOD /path") the stand-in does not
// implement; a test can assert it stays empty.
func (s *Server) Unhandled() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.unhandled...)
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	// Dashboards, also behind the managed service's /_dashboards base path.
	if strings.HasPrefix(p, "/_dashboards/") {
		p = strings.TrimPrefix(p, "/_dashboards")
	}
	parts := strings.Split(strings.Trim(p, "/"), "/")
	switch {
	case p == "/api/saved_objects/_import":
		s.serveImport(w, r)
	case p == "/_bulk" || (len(parts) == 2 && parts[1] == "_bulk"):
		def := ""
		if len(parts) == 2 {
			def = parts[0]
		}
		s.serveBulk(w, r, def)
	case len(parts) == 2 && parts[0] == "_index_template":
		s.serveTemplate(w, r, parts[1])
	case len(parts) == 4 && parts[0] == "_plugins" && parts[1] == "_ism" && parts[2] == "policies":
		s.servePolicy(w, r, parts[3])
	case len(parts) == 5 && parts[0] == "_plugins" && parts[1] == "_security" && parts[2] == "api" && (parts[3] == "roles" || parts[3] == "rolesmapping"):
		s.serveSecurity(w, r, parts[3], parts[4])
	case p == "/_search" || (len(parts) == 2 && parts[1] == "_search"):
		pattern := "*"
		if len(parts) == 2 {
			pattern = parts[0]
		}
		s.serveSearch(w, r, pattern)
	case len(parts) == 2 && parts[1] == "_count":
		s.serveCount(w, r, parts[0])
	case len(parts) >= 1 && parts[len(parts)-1] == "_refresh":
		writeJSON(w, 200, map[string]any{"_shards": map[string]int{"total": 1, "successful": 1, "failed": 0}})
	case p == "/" && r.Method == http.MethodGet:
		writeJSON(w, 200, map[string]any{"name": "opensearchtest", "cluster_name": "opensearchtest", "version": map[string]any{"distribution": "opensearch", "number": "2.19.0"}, "tagline": "The OpenSearch Project: https://opensearch.org/"})
	default:
		s.mu.Lock()
		s.unhandled = append(s.unhandled, r.Method+" "+r.URL.Path)
		s.mu.Unlock()
		writeError(w, 400, "illegal_argument_exception", fmt.Sprintf("no handler found for uri [%s] and method [%s]", r.URL.Path, r.Method))
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), 500)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// writeError answers with OpenSearch's error envelope.
func writeError(w http.ResponseWriter, status int, typ, reason string) {
	e := map[string]any{"type": typ, "reason": reason}
	writeJSON(w, status, map[string]any{
		"error":  map[string]any{"root_cause": []any{e}, "type": typ, "reason": reason},
		"status": status,
	})
}

func (s *Server) serveCount(w http.ResponseWriter, r *http.Request, pattern string) {
	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		writeError(w, 405, "illegal_argument_exception", "method not allowed")
		return
	}
	writeJSON(w, 200, map[string]any{"count": s.Count(pattern), "_shards": map[string]int{"total": 1, "successful": 1, "skipped": 0, "failed": 0}})
}

// ---- index templates ----

func (s *Server) serveTemplate(w http.ResponseWriter, r *http.Request, name string) {
	switch r.Method {
	case http.MethodGet:
		s.mu.Lock()
		t, ok := s.templates[name]
		s.mu.Unlock()
		if !ok {
			writeError(w, 404, "resource_not_found_exception", fmt.Sprintf("index template matching [%s] not found", name))
			return
		}
		writeJSON(w, 200, map[string]any{"index_templates": []any{map[string]any{"name": name, "index_template": t.Raw}}})
	case http.MethodPut, http.MethodPost:
		if !jsonContentType(r) {
			writeJSON(w, 406, map[string]any{"error": fmt.Sprintf("Content-Type header [%s] is not supported", r.Header.Get("Content-Type")), "status": 406})
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, 10<<20))
		if err != nil {
			writeError(w, 400, "parse_exception", err.Error())
			return
		}
		t, perr := parseTemplate(name, body)
		if perr != nil {
			writeError(w, 400, perr.typ, perr.reason)
			return
		}
		s.mu.Lock()
		s.templates[name] = t
		s.mu.Unlock()
		writeJSON(w, 200, map[string]bool{"acknowledged": true})
	case http.MethodDelete:
		s.mu.Lock()
		delete(s.templates, name)
		s.mu.Unlock()
		writeJSON(w, 200, map[string]bool{"acknowledged": true})
	default:
		writeError(w, 405, "illegal_argument_exception", "method not allowed")
	}
}

type apiError struct{ typ, reason string }

func parseTemplate(name string, body []byte) (*indexTemplate, *apiError) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		return nil, &apiError{"x_content_parse_exception", "failed to parse template: " + err.Error()}
	}
	for k := range raw {
		switch k {
		case "index_patterns", "template", "composed_of", "priority", "version", "_meta", "data_stream":
		default:
			return nil, &apiError{"x_content_parse_exception", fmt.Sprintf("[index_template] unknown field [%s]", k)}
		}
	}
	t := &indexTemplate{Name: name, Raw: append(json.RawMessage(nil), body...)}
	if ip, ok := raw["index_patterns"]; ok {
		if err := json.Unmarshal(ip, &t.Patterns); err != nil {
			var one string
			if json.Unmarshal(ip, &one) != nil {
				return nil, &apiError{"x_content_parse_exception", "[index_template] failed to parse field [index_patterns]"}
			}
			t.Patterns = []string{one}
		}
	}
	if len(t.Patterns) == 0 {
		return nil, &apiError{"action_request_validation_exception", "Validation Failed: 1: index patterns are missing;"}
	}
	if p, ok := raw["priority"]; ok {
		if err := json.Unmarshal(p, &t.Priority); err != nil || t.Priority < 0 {
			return nil, &apiError{"x_content_parse_exception", "[index_template] failed to parse field [priority]"}
		}
	}
	if tb, ok := raw["template"]; ok {
		var tpl map[string]json.RawMessage
		if err := json.Unmarshal(tb, &tpl); err != nil {
			return nil, &apiError{"x_content_parse_exception", "[index_template] failed to parse field [template]"}
		}
		for k := range tpl {
			if k != "settings" && k != "mappings" && k != "aliases" {
				return nil, &apiError{"x_content_parse_exception", fmt.Sprintf("[template] unknown field [%s]", k)}
			}
		}
		if mb, ok := tpl["mappings"]; ok {
			m, err := parseObjectMapping("", mb, true)
			if err != nil {
				return nil, &apiError{"mapper_parsing_exception", err.Error()}
			}
			t.Mapping = m
		}
	}
	return t, nil
}

// templateFor returns the highest-priority template matching an index
// name. s.mu must be held.
func (s *Server) templateFor(name string) *indexTemplate {
	var best *indexTemplate
	for _, t := range s.templates {
		for _, p := range t.Patterns {
			if ok, _ := path.Match(p, name); ok && (best == nil || t.Priority > best.Priority) {
				best = t
			}
		}
	}
	return best
}

// ---- ISM ----

func (s *Server) servePolicy(w http.ResponseWriter, r *http.Request, id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.policies[id]
	switch r.Method {
	case http.MethodGet:
		if p == nil {
			writeError(w, 404, "status_exception", "Policy not found")
			return
		}
		writeJSON(w, 200, map[string]any{"_id": id, "_version": p.version, "_seq_no": p.seqNo, "_primary_term": p.primaryTerm, "policy": json.RawMessage(p.body)})
	case http.MethodPut:
		if !jsonContentType(r) {
			writeJSON(w, 406, map[string]any{"error": fmt.Sprintf("Content-Type header [%s] is not supported", r.Header.Get("Content-Type")), "status": 406})
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			writeError(w, 400, "parse_exception", err.Error())
			return
		}
		pol, perr := parsePolicy(body)
		if perr != nil {
			writeError(w, 400, perr.typ, perr.reason)
			return
		}
		q := r.URL.Query()
		seqS, termS := q.Get("if_seq_no"), q.Get("if_primary_term")
		if (seqS == "") != (termS == "") {
			writeError(w, 400, "action_request_validation_exception", "if_seq_no and if_primary_term must be used together")
			return
		}
		s.seqNo++
		if seqS == "" {
			if p != nil {
				writeError(w, 409, "version_conflict_engine_exception", fmt.Sprintf("[%s]: version conflict, document already exists (current version [%d])", id, p.version))
				return
			}
			p = &policy{body: pol, seqNo: s.seqNo, primaryTerm: 1, version: 1}
			s.policies[id] = p
			writeJSON(w, 201, map[string]any{"_id": id, "_version": p.version, "_primary_term": p.primaryTerm, "_seq_no": p.seqNo, "policy": map[string]any{"policy": json.RawMessage(pol)}})
			return
		}
		seq, err1 := strconv.ParseInt(seqS, 10, 64)
		term, err2 := strconv.ParseInt(termS, 10, 64)
		if err1 != nil || err2 != nil {
			writeError(w, 400, "illegal_argument_exception", "invalid if_seq_no or if_primary_term")
			return
		}
		if p == nil {
			writeError(w, 404, "status_exception", "Policy not found")
			return
		}
		if p.seqNo != seq || p.primaryTerm != term {
			writeError(w, 409, "version_conflict_engine_exception", fmt.Sprintf("[%s]: version conflict, required seqNo [%d], primary term [%d]. current document has seqNo [%d] and primary term [%d]", id, seq, term, p.seqNo, p.primaryTerm))
			return
		}
		p.body, p.seqNo, p.version = pol, s.seqNo, p.version+1
		writeJSON(w, 200, map[string]any{"_id": id, "_version": p.version, "_primary_term": p.primaryTerm, "_seq_no": p.seqNo, "policy": map[string]any{"policy": json.RawMessage(pol)}})
	case http.MethodDelete:
		if p == nil {
			writeError(w, 404, "status_exception", "Policy not found")
			return
		}
		delete(s.policies, id)
		writeJSON(w, 200, map[string]any{"_id": id, "result": "deleted"})
	default:
		writeError(w, 405, "illegal_argument_exception", "method not allowed")
	}
}

// parsePolicy checks the structure ISM checks: a policy with states, a
// default_state among them, transitions to existing states, known
// conditions, and an ism_template with index_patterns.
func parsePolicy(body []byte) (json.RawMessage, *apiError) {
	var doc struct {
		Policy *struct {
			Description  string `json:"description"`
			DefaultState string `json:"default_state"`
			States       []struct {
				Name        string            `json:"name"`
				Actions     []json.RawMessage `json:"actions"`
				Transitions []struct {
					StateName  string                     `json:"state_name"`
					Conditions map[string]json.RawMessage `json:"conditions"`
				} `json:"transitions"`
			} `json:"states"`
			ISMTemplate json.RawMessage `json:"ism_template"`
		} `json:"policy"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&doc); err != nil {
		return nil, &apiError{"x_content_parse_exception", err.Error()}
	}
	if doc.Policy == nil {
		return nil, &apiError{"illegal_argument_exception", "Required [policy] is missing"}
	}
	p := doc.Policy
	names := map[string]bool{}
	for _, st := range p.States {
		names[st.Name] = true
	}
	if len(p.States) == 0 {
		return nil, &apiError{"illegal_argument_exception", "Policy must contain at least one State"}
	}
	if !names[p.DefaultState] {
		return nil, &apiError{"illegal_argument_exception", "Policy must have a valid default state"}
	}
	for _, st := range p.States {
		for _, tr := range st.Transitions {
			if !names[tr.StateName] {
				return nil, &apiError{"illegal_argument_exception", fmt.Sprintf("Policy contains a transition to nonexistent state [%s]", tr.StateName)}
			}
			for k, v := range tr.Conditions {
				switch k {
				case "min_index_age", "min_rollover_age", "min_state_age", "min_size":
					var sv string
					if json.Unmarshal(v, &sv) != nil || !timeOrSizeRE(k, sv) {
						return nil, &apiError{"illegal_argument_exception", fmt.Sprintf("failed to parse [%s] value [%s]", k, v)}
					}
				case "min_doc_count", "cron":
				default:
					return nil, &apiError{"x_content_parse_exception", fmt.Sprintf("unknown condition [%s]", k)}
				}
			}
		}
	}
	// the stored policy is the object under "policy"
	var outer map[string]json.RawMessage
	_ = json.Unmarshal(body, &outer)
	return outer["policy"], nil
}

func timeOrSizeRE(k, v string) bool {
	if v == "" {
		return false
	}
	i := 0
	for i < len(v) && v[i] >= '0' && v[i] <= '9' {
		i++
	}
	if i == 0 {
		return false
	}
	unit := v[i:]
	if k == "min_size" {
		switch unit {
		case "b", "kb", "mb", "gb", "tb", "pb":
			return true
		}
		return false
	}
	switch unit {
	case "d", "h", "m", "s", "ms", "micros", "nanos":
		return true
	}
	return false
}

// ---- Dashboards saved objects ----

func (s *Server) serveImport(w http.ResponseWriter, r *http.Request) {
	dashErr := func(status int, msg string) {
		writeJSON(w, status, map[string]any{"statusCode": status, "error": http.StatusText(status), "message": msg})
	}
	if r.Method != http.MethodPost {
		dashErr(404, "Not Found")
		return
	}
	if r.Header.Get("osd-xsrf") == "" {
		dashErr(400, "Request must contain a osd-xsrf header.")
		return
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/form-data" {
		dashErr(415, "Unsupported Media Type")
		return
	}
	if err := r.ParseMultipartForm(8 << 20); err != nil {
		dashErr(400, "invalid multipart body: "+err.Error())
		return
	}
	f, fh, err := r.FormFile("file")
	if err != nil {
		dashErr(400, "[request body.file]: expected value of type [object] but got [undefined]")
		return
	}
	defer f.Close()
	if ext := path.Ext(fh.Filename); ext != ".ndjson" {
		dashErr(400, fmt.Sprintf("Invalid file extension %s", ext))
		return
	}
	data, err := io.ReadAll(f)
	if err != nil {
		dashErr(400, err.Error())
		return
	}
	overwrite := r.URL.Query().Get("overwrite") == "true"
	type objErr struct {
		ID    string         `json:"id"`
		Type  string         `json:"type"`
		Title string         `json:"title,omitempty"`
		Error map[string]any `json:"error"`
	}
	var errs []objErr
	var results []map[string]string
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, line := range bytes.Split(data, []byte("\n")) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var o struct {
			Type       string                     `json:"type"`
			ID         string                     `json:"id"`
			Attributes map[string]json.RawMessage `json:"attributes"`
			References []struct {
				Name, Type, ID string
			} `json:"references"`
			ExportedCount *int `json:"exportedCount"`
		}
		if err := json.Unmarshal(line, &o); err != nil {
			dashErr(400, "Unexpected token in JSON: "+err.Error())
			return
		}
		if o.ExportedCount != nil { // export summary line
			continue
		}
		if o.Type == "" || o.ID == "" || o.Attributes == nil {
			errs = append(errs, objErr{ID: o.ID, Type: o.Type, Error: map[string]any{"type": "unsupported_type"}})
			continue
		}
		key := o.Type + "/" + o.ID
		if _, exists := s.objects[key]; exists && !overwrite {
			errs = append(errs, objErr{ID: o.ID, Type: o.Type, Error: map[string]any{"type": "conflict"}})
			continue
		}
		s.objects[key] = append(json.RawMessage(nil), line...)
		results = append(results, map[string]string{"type": o.Type, "id": o.ID})
	}
	// references must resolve (to this import or earlier ones)
	for _, res := range results {
		var o struct {
			References []struct{ Name, Type, ID string } `json:"references"`
		}
		_ = json.Unmarshal(s.objects[res["type"]+"/"+res["id"]], &o)
		for _, ref := range o.References {
			if _, ok := s.objects[ref.Type+"/"+ref.ID]; !ok {
				errs = append(errs, objErr{ID: res["id"], Type: res["type"], Error: map[string]any{"type": "missing_references", "references": []any{map[string]string{"type": ref.Type, "id": ref.ID}}}})
			}
		}
	}
	writeJSON(w, 200, map[string]any{"success": len(errs) == 0, "successCount": len(results) - countRefErrs(errs), "successResults": results, "errors": errs})
}

func countRefErrs[T any](errs []T) int {
	n := 0
	for _, e := range errs {
		b, _ := json.Marshal(e)
		if bytes.Contains(b, []byte("missing_references")) {
			n++
		}
	}
	return n
}

func jsonContentType(r *http.Request) bool {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return err == nil && (mt == "application/json" || mt == "application/x-ndjson")
}
