package opensearchtest

import (
	"bytes"
	"encoding/json"
	"io"
	"mime/multipart"
	"net/http"
	"strings"
	"testing"
)

func do(t *testing.T, method, url, ctype string, body []byte, hdr map[string]string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s %s: answer is not JSON: %q", method, url, b)
	}
	return resp.StatusCode, m
}

func errType(m map[string]any) string {
	if e, ok := m["error"].(map[string]any); ok {
		s, _ := e["type"].(string)
		return s
	}
	return ""
}

func TestBulkShapes(t *testing.T) {
	s := NewServer()
	defer s.Close()
	tests := []struct {
		name    string
		ctype   string
		body    string
		status  int
		errType string
	}{
		{"ok", "application/x-ndjson", `{"create":{"_index":"a","_id":"1"}}` + "\n" + `{"x":1}` + "\n", 200, ""},
		{"json_ctype", "application/json; charset=UTF-8", `{"create":{"_index":"a","_id":"2"}}` + "\n" + `{"x":1}` + "\n", 200, ""},
		{"bad_ctype", "text/plain", `{"create":{"_index":"a","_id":"3"}}` + "\n" + `{"x":1}` + "\n", 406, ""},
		{"no_trailing_newline", "application/x-ndjson", `{"create":{"_index":"a","_id":"4"}}` + "\n" + `{"x":1}`, 400, "illegal_argument_exception"},
		{"malformed_action", "application/x-ndjson", `"create"` + "\n" + `{"x":1}` + "\n", 400, "illegal_argument_exception"},
		{"two_ops", "application/x-ndjson", `{"create":{"_index":"a","_id":"5"},"index":{"_index":"a"}}` + "\n" + `{"x":1}` + "\n", 400, "illegal_argument_exception"},
		{"no_index", "application/x-ndjson", `{"create":{"_id":"6"}}` + "\n" + `{"x":1}` + "\n", 400, "action_request_validation_exception"},
		{"missing_source", "application/x-ndjson", `{"create":{"_index":"a","_id":"7"}}` + "\n", 400, "illegal_argument_exception"},
		{"empty", "application/x-ndjson", "", 400, "action_request_validation_exception"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, m := do(t, "POST", s.URL+"/_bulk", tt.ctype, []byte(tt.body), nil)
			if status != tt.status || errType(m) != tt.errType {
				t.Errorf("POST /_bulk = %d %s (%v), want %d %s", status, errType(m), m, tt.status, tt.errType)
			}
		})
	}
	// per-item shape of a duplicate create and a non-object source
	status, m := do(t, "POST", s.URL+"/a/_bulk", "application/x-ndjson", []byte(`{"create":{"_id":"1"}}`+"\n"+`{"x":1}`+"\n"+`{"create":{"_id":"9"}}`+"\n"+`[1]`+"\n"), nil)
	if status != 200 || m["errors"] != true {
		t.Fatalf("bulk = %d %v", status, m)
	}
	items := m["items"].([]any)
	dup := items[0].(map[string]any)["create"].(map[string]any)
	if dup["status"].(float64) != 409 || dup["error"].(map[string]any)["type"] != "version_conflict_engine_exception" || dup["_id"] != "1" || dup["_index"] != "a" {
		t.Errorf("duplicate item = %v", dup)
	}
	bad := items[1].(map[string]any)["create"].(map[string]any)
	if bad["status"].(float64) != 400 || bad["error"].(map[string]any)["type"] != "mapper_parsing_exception" {
		t.Errorf("non-object source item = %v", bad)
	}
	if n := s.Count("a"); n != 2 {
		t.Errorf("Count(a) = %d, want 2", n)
	}
}

func TestTemplateValidation(t *testing.T) {
	s := NewServer()
	defer s.Close()
	tests := []struct {
		name, body string
		status     int
	}{
		{"ok", `{"index_patterns":["x-*"],"template":{"mappings":{"dynamic":"strict","properties":{"a":{"type":"ip"},"o":{"properties":{"p":{"type":"geo_point"}}}}}}}`, 200},
		{"no_patterns", `{"template":{}}`, 400},
		{"unknown_type", `{"index_patterns":["x-*"],"template":{"mappings":{"properties":{"a":{"type":"ipaddress"}}}}}`, 400},
		{"unknown_field", `{"index_patterns":["x-*"],"mapping":{}}`, 400},
		{"bad_dynamic", `{"index_patterns":["x-*"],"template":{"mappings":{"dynamic":"sometimes"}}}`, 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, m := do(t, "PUT", s.URL+"/_index_template/t-"+tt.name, "application/json", []byte(tt.body), nil)
			if status != tt.status {
				t.Errorf("PUT template = %d %v, want %d", status, m, tt.status)
			}
		})
	}
	// the ok template applies dynamic strict and types
	body := `{"create":{"_index":"x-1","_id":"1"}}` + "\n" + `{"a":"192.0.2.1","o":{"p":{"lat":1,"lon":2}}}` + "\n" +
		`{"create":{"_index":"x-1","_id":"2"}}` + "\n" + `{"a":"192.0.2.1","b":1}` + "\n" +
		`{"create":{"_index":"x-1","_id":"3"}}` + "\n" + `{"a":"192.0.2.999"}` + "\n" +
		`{"create":{"_index":"x-1","_id":"4"}}` + "\n" + `{"o":{"p":{"lat":100,"lon":2}}}` + "\n"
	_, m := do(t, "POST", s.URL+"/_bulk", "application/x-ndjson", []byte(body), nil)
	want := []string{"", "strict_dynamic_mapping_exception", "mapper_parsing_exception", "mapper_parsing_exception"}
	for i, it := range m["items"].([]any) {
		c := it.(map[string]any)["create"].(map[string]any)
		got := ""
		if e, ok := c["error"].(map[string]any); ok {
			got = e["type"].(string)
		}
		if got != want[i] {
			t.Errorf("item %d error = %q, want %q (%v)", i, got, want[i], c)
		}
	}
}

func TestISMPolicy(t *testing.T) {
	s := NewServer()
	defer s.Close()
	pol := `{"policy":{"description":"d","default_state":"hot","states":[{"name":"hot","actions":[],"transitions":[{"state_name":"delete","conditions":{"min_index_age":"30d"}}]},{"name":"delete","actions":[{"delete":{}}],"transitions":[]}],"ism_template":[{"index_patterns":["x-*"]}]}}`
	u := s.URL + "/_plugins/_ism/policies/p"
	if st, m := do(t, "GET", u, "", nil, nil); st != 404 {
		t.Errorf("GET missing = %d %v", st, m)
	}
	if st, m := do(t, "PUT", u, "application/json", []byte(pol), nil); st != 201 {
		t.Fatalf("create = %d %v", st, m)
	}
	if st, m := do(t, "PUT", u, "application/json", []byte(pol), nil); st != 409 || errType(m) != "version_conflict_engine_exception" {
		t.Errorf("second create = %d %v, want 409", st, m)
	}
	st, m := do(t, "GET", u, "", nil, nil)
	if st != 200 {
		t.Fatalf("GET = %d", st)
	}
	seq := int(m["_seq_no"].(float64))
	if st, m := do(t, "PUT", u+"?if_seq_no=999&if_primary_term=1", "application/json", []byte(pol), nil); st != 409 {
		t.Errorf("stale update = %d %v, want 409", st, m)
	}
	if st, m := do(t, "PUT", u+"?if_seq_no="+itoa(seq)+"&if_primary_term=1", "application/json", []byte(pol), nil); st != 200 {
		t.Errorf("update = %d %v, want 200", st, m)
	}
	bad := strings.Replace(pol, `"state_name":"delete"`, `"state_name":"nowhere"`, 1)
	if st, _ := do(t, "PUT", s.URL+"/_plugins/_ism/policies/q", "application/json", []byte(bad), nil); st != 400 {
		t.Errorf("policy with a transition to a missing state = %d, want 400", st)
	}
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }

func TestImportShapes(t *testing.T) {
	s := NewServer()
	defer s.Close()
	form := func(name, data string) (string, []byte) {
		var b bytes.Buffer
		mw := multipart.NewWriter(&b)
		fw, _ := mw.CreateFormFile("file", name)
		fw.Write([]byte(data))
		mw.Close()
		return mw.FormDataContentType(), b.Bytes()
	}
	u := s.URL + "/api/saved_objects/_import?overwrite=true"
	obj := `{"type":"index-pattern","id":"ip","attributes":{"title":"x-*"},"references":[]}` + "\n"
	ct, body := form("a.ndjson", obj)
	if st, m := do(t, "POST", u, ct, body, nil); st != 400 || !strings.Contains(m["message"].(string), "osd-xsrf") {
		t.Errorf("import without osd-xsrf = %d %v", st, m)
	}
	ct, body = form("a.json", obj)
	if st, _ := do(t, "POST", u, ct, body, map[string]string{"osd-xsrf": "true"}); st != 400 {
		t.Errorf("import of a .json file = %d, want 400", st)
	}
	ct, body = form("a.ndjson", obj+`{"type":"visualization","id":"v","attributes":{"title":"v"},"references":[{"name":"r","type":"index-pattern","id":"missing"}]}`+"\n")
	st, m := do(t, "POST", u, ct, body, map[string]string{"osd-xsrf": "true"})
	if st != 200 || m["success"] != false || len(m["errors"].([]any)) != 1 {
		t.Errorf("import with a dangling reference = %d %v, want success false and one error", st, m)
	}
	ct, body = form("a.ndjson", obj)
	st, m = do(t, "POST", u, ct, body, map[string]string{"osd-xsrf": "true"})
	if st != 200 || m["success"] != true || m["successCount"].(float64) != 1 {
		t.Errorf("import = %d %v", st, m)
	}
}
