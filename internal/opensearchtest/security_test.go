package opensearchtest_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"testing"

	"github.com/originlens/originlens/internal/opensearchtest"
)

func do(t *testing.T, method, url, body string) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = bytes.NewReader([]byte(body))
	}
	req, err := http.NewRequestWithContext(t.Context(), method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("%s %s: answer is not a JSON object: %v", method, url, err)
	}
	return resp.StatusCode, out
}

// TestSecurityAPIShapes drives the stand-in's security endpoints with raw
// requests and checks the documented answers: status words, {name: {...}}
// on GET, JSON Patch semantics (add at /- appends, add at the list replaces).
func TestSecurityAPIShapes(t *testing.T) {
	srv := opensearchtest.NewServer()
	defer srv.Close()
	api := srv.URL + "/_plugins/_security/api/"

	if code, out := do(t, "GET", api+"rolesmapping/r1", ""); code != 404 || out["status"] != "NOT_FOUND" {
		t.Errorf("GET missing mapping: %d %v", code, out)
	}
	if code, out := do(t, "PUT", api+"rolesmapping/r1", `{"backend_roles":["a"]}`); code != 404 {
		t.Errorf("PUT mapping of a missing role: %d %v, want 404", code, out)
	}
	if code, out := do(t, "PUT", api+"roles/r1", `{"cluster_permissions":["cluster:monitor/main"],"index_permissions":[{"index_patterns":["x-*"],"allowed_actions":["crud"]}]}`); code != 201 || out["status"] != "CREATED" {
		t.Errorf("PUT new role: %d %v", code, out)
	}
	if code, out := do(t, "PUT", api+"roles/r1", `{"cluster_permissions":[]}`); code != 200 || out["status"] != "OK" {
		t.Errorf("PUT existing role: %d %v", code, out)
	}
	if code, _ := do(t, "PUT", api+"roles/r1", `{"index_permissions":[{"index_patterns":[]}]}`); code != 400 {
		t.Errorf("PUT role with an empty index permission: %d, want 400", code)
	}
	if code, _ := do(t, "PUT", api+"roles/all_access", `{"cluster_permissions":[]}`); code != 403 {
		t.Errorf("PUT reserved all_access: %d, want 403", code)
	}
	if code, out := do(t, "PUT", api+"rolesmapping/r1", `{"backend_roles":["a"],"users":["u"]}`); code != 201 || out["status"] != "CREATED" {
		t.Errorf("PUT new mapping: %d %v", code, out)
	}
	if code, out := do(t, "PATCH", api+"rolesmapping/r1", `[{"op":"add","path":"/backend_roles/-","value":"b"}]`); code != 200 || out["status"] != "OK" {
		t.Errorf("PATCH append: %d %v", code, out)
	}
	code, out := do(t, "GET", api+"rolesmapping/r1", "")
	got, _ := out["r1"].(map[string]any)
	if code != 200 || got == nil || got["hosts"] == nil {
		t.Fatalf("GET mapping: %d %v, want {r1: {backend_roles, hosts, users, ...}}", code, out)
	}
	if m, _ := srv.RoleMapping("r1"); !slices.Equal(m.BackendRoles, []string{"a", "b"}) || !slices.Equal(m.Users, []string{"u"}) {
		t.Errorf("after append: %+v", m)
	}
	if code, _ := do(t, "PATCH", api+"rolesmapping/r1", `[{"op":"add","path":"/backend_roles","value":["c"]}]`); code != 200 {
		t.Errorf("PATCH replace-by-add: %d", code)
	}
	if m, _ := srv.RoleMapping("r1"); !slices.Equal(m.BackendRoles, []string{"c"}) {
		t.Errorf("add at /backend_roles must replace the list (RFC 6902): %+v", m)
	}
	if code, _ := do(t, "PATCH", api+"rolesmapping/r1", `[{"op":"add","path":"/nosuch","value":"x"}]`); code != 400 {
		t.Errorf("PATCH bad path: %d, want 400", code)
	}
	if code, _ := do(t, "PATCH", api+"rolesmapping/missing", `[{"op":"add","path":"/users/-","value":"x"}]`); code != 404 {
		t.Errorf("PATCH missing mapping: %d, want 404", code)
	}
}
