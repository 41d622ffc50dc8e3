package opensearchtest

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"
)

type bulkMeta struct {
	Index string `json:"_index"`
	ID    string `json:"_id"`
}

type bulkAction struct {
	Create *bulkMeta `json:"create"`
	Index  *bulkMeta `json:"index"`
	Update *bulkMeta `json:"update"`
	Delete *bulkMeta `json:"delete"`
}

type bulkOp struct {
	op     string
	meta   bulkMeta
	source []byte
}

type itemResult struct {
	op, index, id, result string
	status                int
	version, seqNo        int64
	errType, errReason    string
}

func (s *Server) serveBulk(w http.ResponseWriter, r *http.Request, defIndex string) {
	start := time.Now()
	if r.Method != http.MethodPost && r.Method != http.MethodPut {
		writeError(w, 405, "illegal_argument_exception", "method not allowed")
		return
	}
	ct := r.Header.Get("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || (mt != "application/x-ndjson" && mt != "application/json") {
		writeJSON(w, 406, map[string]any{"error": fmt.Sprintf("Content-Type header [%s] is not supported", ct), "status": 406})
		return
	}
	var rd io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		gz, err := gzip.NewReader(r.Body)
		if err != nil {
			writeError(w, 400, "parse_exception", "bad gzip body")
			return
		}
		rd = gz
	}
	body, err := io.ReadAll(io.LimitReader(rd, 100<<20+1)) // http.max_content_length
	if err != nil {
		writeError(w, 400, "parse_exception", err.Error())
		return
	}
	s.mu.Lock()
	maxBody := s.maxBody
	s.mu.Unlock()
	if maxBody <= 0 {
		maxBody = 100 << 20
	}
	if len(body) > maxBody {
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(413) // OpenSearch's HTTP layer answers before any JSON
		return
	}

	s.mu.Lock()
	s.bulkRequests++
	delay := s.delay
	fail := s.unavailable > 0
	if fail {
		s.unavailable--
	}
	s.mu.Unlock()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
	}
	if fail {
		writeError(w, 503, "cluster_block_exception", "blocked by: [SERVICE_UNAVAILABLE/2/no cluster-manager];")
		return
	}

	ops, perr := parseBulk(body, defIndex)
	if perr != nil {
		writeError(w, 400, perr.typ, perr.reason)
		return
	}

	// Validate sources outside the lock (the slow part).
	s.mu.Lock()
	fast := s.fast
	s.mu.Unlock()
	preErr := make([]*docError, len(ops))
	if !fast {
		for i, op := range ops {
			if op.op == "create" || op.op == "index" {
				s.mu.Lock()
				m := s.mappingFor(op.meta.Index)
				s.mu.Unlock()
				preErr[i] = validateDoc(m, op.meta.ID, op.source)
			}
		}
	}

	results := make([]itemResult, len(ops))
	anyErr := false
	s.mu.Lock()
	for i, op := range ops {
		res := s.applyLocked(op, preErr[i])
		if res.errType != "" {
			anyErr = true
		}
		results[i] = res
	}
	s.mu.Unlock()

	out := make([]byte, 0, 64+len(results)*160)
	out = append(out, `{"took":`...)
	out = strconv.AppendInt(out, time.Since(start).Milliseconds(), 10)
	out = append(out, `,"errors":`...)
	out = strconv.AppendBool(out, anyErr)
	out = append(out, `,"items":[`...)
	for i, res := range results {
		if i > 0 {
			out = append(out, ',')
		}
		out = appendItem(out, res)
	}
	out = append(out, "]}"...)
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(out)))
	_, _ = w.Write(out)
}

func appendItem(out []byte, r itemResult) []byte {
	q := func(b []byte, s string) []byte { j, _ := json.Marshal(s); return append(b, j...) }
	out = append(out, `{"`...)
	out = append(out, r.op...)
	out = append(out, `":{"_index":`...)
	out = q(out, r.index)
	out = append(out, `,"_id":`...)
	out = q(out, r.id)
	if r.errType == "" {
		out = append(out, `,"_version":`...)
		out = strconv.AppendInt(out, r.version, 10)
		out = append(out, `,"result":`...)
		out = q(out, r.result)
		out = append(out, `,"_shards":{"total":2,"successful":1,"failed":0},"_seq_no":`...)
		out = strconv.AppendInt(out, r.seqNo, 10)
		out = append(out, `,"_primary_term":1`...)
	}
	out = append(out, `,"status":`...)
	out = strconv.AppendInt(out, int64(r.status), 10)
	if r.errType != "" {
		out = append(out, `,"error":{"type":`...)
		out = q(out, r.errType)
		out = append(out, `,"reason":`...)
		out = q(out, r.errReason)
		if r.errType == "version_conflict_engine_exception" {
			out = append(out, `,"index":`...)
			out = q(out, r.index)
			out = append(out, `,"shard":"0","index_uuid":"opensearchtest"`...)
		}
		out = append(out, '}')
	}
	return append(out, "}}"...)
}

// parseBulk splits the NDJSON body into operations as OpenSearch's
// BulkRequestParser does.
func parseBulk(body []byte, defIndex string) ([]bulkOp, *apiError) {
	if len(body) == 0 {
		return nil, &apiError{"action_request_validation_exception", "Validation Failed: 1: no requests added;"}
	}
	if body[len(body)-1] != '\n' {
		return nil, &apiError{"illegal_argument_exception", "The bulk request must be terminated by a newline [\\n]"}
	}
	var ops []bulkOp
	line := 0
	for len(body) > 0 {
		i := bytes.IndexByte(body, '\n')
		act := body[:i]
		body = body[i+1:]
		line++
		if len(bytes.TrimSpace(act)) == 0 {
			continue
		}
		var a bulkAction
		if err := decodeAction(act, &a); err != nil {
			return nil, &apiError{"illegal_argument_exception", fmt.Sprintf("Malformed action/metadata line [%d], expected START_OBJECT or END_OBJECT but found [%s]", line, strings.SplitN(err.Error(), ":", 2)[0])}
		}
		var op bulkOp
		n := 0
		for _, c := range [...]struct {
			name string
			m    *bulkMeta
		}{{"create", a.Create}, {"index", a.Index}, {"update", a.Update}, {"delete", a.Delete}} {
			if c.m != nil {
				op.op, op.meta = c.name, *c.m
				n++
			}
		}
		if n != 1 {
			return nil, &apiError{"illegal_argument_exception", fmt.Sprintf("Malformed action/metadata line [%d], expected a simple value for field [_index] but found [START_OBJECT]", line)}
		}
		if op.meta.Index == "" {
			op.meta.Index = defIndex
		}
		if op.meta.Index == "" {
			return nil, &apiError{"action_request_validation_exception", "Validation Failed: 1: index is missing;"}
		}
		if op.op != "delete" {
			if len(body) == 0 {
				return nil, &apiError{"illegal_argument_exception", fmt.Sprintf("Malformed action/metadata line [%d], expected a source line after the action line", line)}
			}
			j := bytes.IndexByte(body, '\n')
			op.source = body[:j]
			body = body[j+1:]
			line++
		}
		ops = append(ops, op)
	}
	if len(ops) == 0 {
		return nil, &apiError{"action_request_validation_exception", "Validation Failed: 1: no requests added;"}
	}
	return ops, nil
}

// mappingFor returns the mapping a write to name would use: the index's
// own, or the one it would be created with. s.mu must be held.
func (s *Server) mappingFor(name string) *objectMapping {
	if ix, ok := s.indices[name]; ok {
		return ix.mapping
	}
	if t := s.templateFor(name); t != nil {
		return t.Mapping
	}
	return nil
}

func validIndexName(n string) string {
	switch {
	case n != strings.ToLower(n):
		return "must be lowercase"
	case strings.HasPrefix(n, "_") || strings.HasPrefix(n, "-") || strings.HasPrefix(n, "+"):
		return "must not start with '_', '-', or '+'"
	case strings.ContainsAny(n, `\/*?"<>| ,#:`):
		return `must not contain the following characters [ , ", *, \, <, |, ,, >, /, ?]`
	case len(n) > 255:
		return "index name is too long"
	}
	return ""
}

// applyLocked executes one operation. s.mu must be held.
func (s *Server) applyLocked(op bulkOp, pre *docError) itemResult {
	res := itemResult{op: op.op, index: op.meta.Index, id: op.meta.ID}
	errOut := func(status int, typ, reason string) itemResult {
		res.status, res.errType, res.errReason = status, typ, reason
		return res
	}
	if msg := validIndexName(op.meta.Index); msg != "" {
		return errOut(400, "invalid_index_name_exception", fmt.Sprintf("Invalid index name [%s], %s", op.meta.Index, msg))
	}
	if s.blockStatus != 0 {
		if s.blockStatus == 429 {
			return errOut(429, "cluster_block_exception", fmt.Sprintf("index [%s] blocked by: [TOO_MANY_REQUESTS/12/disk usage exceeded flood-stage watermark, index has read-only-allow-delete block];", op.meta.Index))
		}
		return errOut(s.blockStatus, "cluster_block_exception", fmt.Sprintf("index [%s] blocked by: [FORBIDDEN/12/index read-only / allow delete (api)];", op.meta.Index))
	}
	if s.rejectRate > 0 && s.rng.Float64() < s.rejectRate {
		s.itemsRejected++
		return errOut(429, "es_rejected_execution_exception", "rejected execution of coordinating operation [coordinating_and_primary_bytes=0, replica_bytes=0, all_bytes=0, coordinating_operation_bytes=1, max_coordinating_and_primary_bytes=0]")
	}
	if op.op == "update" {
		return errOut(400, "illegal_argument_exception", "opensearchtest does not implement update")
	}
	if pre != nil {
		return errOut(400, pre.typ, pre.reason)
	}
	ix, ok := s.indices[op.meta.Index]
	if !ok {
		if op.op == "delete" {
			return errOut(404, "index_not_found_exception", "no such index ["+op.meta.Index+"]")
		}
		ix = &index{docs: map[string][]byte{}}
		if t := s.templateFor(op.meta.Index); t != nil {
			ix.mapping = t.Mapping
		}
		s.indices[op.meta.Index] = ix
	}
	if op.meta.ID == "" {
		if op.op != "index" && op.op != "create" {
			return errOut(400, "action_request_validation_exception", "Validation Failed: 1: id is missing;")
		}
		s.seqNo++
		op.meta.ID = "auto-" + strconv.FormatInt(s.seqNo, 10)
		res.id = op.meta.ID
	}
	_, exists := ix.docs[op.meta.ID]
	switch op.op {
	case "create":
		if exists {
			s.conflicts++
			return errOut(409, "version_conflict_engine_exception", fmt.Sprintf("[%s]: version conflict, document already exists (current version [1])", op.meta.ID))
		}
		res.status, res.result = 201, "created"
	case "index":
		res.status, res.result = 201, "created"
		if exists {
			res.status, res.result = 200, "updated"
		}
	case "delete":
		if !exists {
			res.status, res.result = 404, "not_found"
			s.seqNo++
			res.seqNo, res.version = s.seqNo, 1
			return res
		}
		delete(ix.docs, op.meta.ID)
		res.status, res.result = 200, "deleted"
		s.seqNo++
		res.seqNo, res.version = s.seqNo, 2
		return res
	}
	if s.fast {
		ix.docs[op.meta.ID] = nil // benchmarks count, they do not read back
	} else {
		ix.docs[op.meta.ID] = append([]byte(nil), op.source...)
	}
	s.seqNo++
	res.seqNo, res.version = s.seqNo, 1
	return res
}

// decodeAction decodes an action line strictly: one JSON object, no
// unknown keys.
func decodeAction(line []byte, a *bulkAction) error {
	if err := json.Unmarshal(line, a); err != nil {
		return err
	}
	// json.Unmarshal ignores unknown keys; OpenSearch does not.
	if a.Create == nil && a.Index == nil && a.Update == nil && a.Delete == nil {
		dec := json.NewDecoder(bytes.NewReader(line))
		dec.DisallowUnknownFields()
		var strict bulkAction
		if err := dec.Decode(&strict); err != nil {
			return err
		}
	}
	return nil
}
