package opensearchtest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// The security plugin's REST API (_plugins/_security/api), the parts that
// map a backend role to a role: roles (GET, PUT), role mappings (GET, PUT,
// PATCH with RFC 6902 JSON Patch). Answers have the documented shapes:
// {"status": "CREATED"|"OK", "message": ...} on success, {"status":
// "NOT_FOUND"|"BAD_REQUEST"|"FORBIDDEN", "message": ...} on errors, and
// GET answers {name: {...}}. Built-in roles are reserved: PUT on them is
// 403, as on a real cluster.

// secRole is a stored role.
type secRole struct {
	body     map[string]json.RawMessage
	reserved bool
}

// SecMapping is a role mapping as the API shows it.
type SecMapping struct {
	BackendRoles    []string `json:"backend_roles"`
	Hosts           []string `json:"hosts"`
	Users           []string `json:"users"`
	AndBackendRoles []string `json:"and_backend_roles"`
	Reserved        bool     `json:"reserved"`
	Hidden          bool     `json:"hidden"`
}

// builtinRoles are reserved roles every cluster has.
var builtinRoles = []string{"all_access", "security_manager", "kibana_user", "readall"}

func (s *Server) secInit() {
	if s.roles != nil {
		return
	}
	s.roles = map[string]*secRole{}
	s.mappings = map[string]*SecMapping{}
	for _, r := range builtinRoles {
		s.roles[r] = &secRole{body: map[string]json.RawMessage{}, reserved: true}
	}
}

// SetRoleMapping stores a role mapping as if an administrator had made it,
// creating the role (unreserved, no permissions) if it does not exist.
func (s *Server) SetRoleMapping(role string, m SecMapping) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.secInit()
	if s.roles[role] == nil {
		s.roles[role] = &secRole{body: map[string]json.RawMessage{}}
	}
	c := m
	s.mappings[role] = &c
}

// RoleMapping returns a stored role mapping.
func (s *Server) RoleMapping(role string) (SecMapping, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.secInit()
	m, ok := s.mappings[role]
	if !ok {
		return SecMapping{}, false
	}
	return *m, true
}

// Role returns a stored role's body as PUT received it.
func (s *Server) Role(name string) (json.RawMessage, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.secInit()
	r, ok := s.roles[name]
	if !ok {
		return nil, false
	}
	b, _ := json.Marshal(r.body)
	return b, true
}

func writeSecStatus(w http.ResponseWriter, code int, status, msg string) {
	writeJSON(w, code, map[string]string{"status": status, "message": msg})
}

// serveSecurity handles _plugins/_security/api/{roles,rolesmapping}/<name>.
func (s *Server) serveSecurity(w http.ResponseWriter, r *http.Request, kind, name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.secInit()
	var body []byte
	if r.Method == http.MethodPut || r.Method == http.MethodPatch {
		if !jsonContentType(r) {
			writeSecStatus(w, 400, "BAD_REQUEST", "Request body required and Content-Type must be application/json")
			return
		}
		var err error
		if body, err = io.ReadAll(io.LimitReader(r.Body, 1<<20)); err != nil || len(body) == 0 {
			writeSecStatus(w, 400, "BAD_REQUEST", "Request body required for this action.")
			return
		}
	}
	switch kind {
	case "roles":
		s.serveRole(w, r, name, body)
	case "rolesmapping":
		s.serveRoleMapping(w, r, name, body)
	}
}

// roleKeys are the fields a role may hold.
var roleKeys = map[string]bool{"description": true, "cluster_permissions": true, "index_permissions": true, "tenant_permissions": true}

func (s *Server) serveRole(w http.ResponseWriter, r *http.Request, name string, body []byte) {
	cur := s.roles[name]
	switch r.Method {
	case http.MethodGet:
		if cur == nil {
			writeSecStatus(w, 404, "NOT_FOUND", fmt.Sprintf("Resource '%s' not found.", name))
			return
		}
		out := map[string]any{"reserved": cur.reserved, "hidden": false, "static": cur.reserved}
		for k, v := range cur.body {
			out[k] = v
		}
		writeJSON(w, 200, map[string]any{name: out})
	case http.MethodPut:
		if cur != nil && cur.reserved {
			writeSecStatus(w, 403, "FORBIDDEN", fmt.Sprintf("Resource '%s' is reserved.", name))
			return
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(body, &m); err != nil {
			writeSecStatus(w, 400, "BAD_REQUEST", "Could not parse content of request: "+err.Error())
			return
		}
		for k := range m {
			if !roleKeys[k] {
				writeSecStatus(w, 400, "BAD_REQUEST", fmt.Sprintf("Invalid configuration: unknown field %q", k))
				return
			}
		}
		if raw, ok := m["index_permissions"]; ok {
			var ips []struct {
				IndexPatterns  []string `json:"index_patterns"`
				AllowedActions []string `json:"allowed_actions"`
			}
			if err := json.Unmarshal(raw, &ips); err != nil {
				writeSecStatus(w, 400, "BAD_REQUEST", "index_permissions: "+err.Error())
				return
			}
			for _, ip := range ips {
				if len(ip.IndexPatterns) == 0 || len(ip.AllowedActions) == 0 {
					writeSecStatus(w, 400, "BAD_REQUEST", "index_permissions need index_patterns and allowed_actions")
					return
				}
			}
		}
		s.roles[name] = &secRole{body: m}
		if cur == nil {
			writeSecStatus(w, 201, "CREATED", fmt.Sprintf("'%s' created.", name))
		} else {
			writeSecStatus(w, 200, "OK", fmt.Sprintf("'%s' updated.", name))
		}
	default:
		s.unhandled = append(s.unhandled, r.Method+" "+r.URL.Path)
		writeSecStatus(w, 405, "METHOD_NOT_ALLOWED", r.Method+" not supported here")
	}
}

func (s *Server) serveRoleMapping(w http.ResponseWriter, r *http.Request, name string, body []byte) {
	cur := s.mappings[name]
	switch r.Method {
	case http.MethodGet:
		if cur == nil {
			writeSecStatus(w, 404, "NOT_FOUND", fmt.Sprintf("'%s' not found.", name))
			return
		}
		writeJSON(w, 200, map[string]any{name: normalised(*cur)})
	case http.MethodPut:
		if s.roles[name] == nil {
			writeSecStatus(w, 404, "NOT_FOUND", fmt.Sprintf("role '%s' not found.", name))
			return
		}
		var m SecMapping
		dec := json.NewDecoder(strings.NewReader(string(body)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&m); err != nil {
			writeSecStatus(w, 400, "BAD_REQUEST", "Could not parse content of request: "+err.Error())
			return
		}
		m.Reserved, m.Hidden = false, false
		s.mappings[name] = &m
		if cur == nil {
			writeSecStatus(w, 201, "CREATED", fmt.Sprintf("'%s' created.", name))
		} else {
			writeSecStatus(w, 200, "OK", fmt.Sprintf("'%s' updated.", name))
		}
	case http.MethodPatch:
		if cur == nil {
			writeSecStatus(w, 404, "NOT_FOUND", fmt.Sprintf("'%s' not found.", name))
			return
		}
		next := normalised(*cur)
		if msg := applyPatch(&next, body); msg != "" {
			writeSecStatus(w, 400, "BAD_REQUEST", msg)
			return
		}
		s.mappings[name] = &next
		writeSecStatus(w, 200, "OK", "Resource updated.")
	default:
		s.unhandled = append(s.unhandled, r.Method+" "+r.URL.Path)
		writeSecStatus(w, 405, "METHOD_NOT_ALLOWED", r.Method+" not supported here")
	}
}

func normalised(m SecMapping) SecMapping {
	for _, l := range []*[]string{&m.BackendRoles, &m.Hosts, &m.Users, &m.AndBackendRoles} {
		if *l == nil {
			*l = []string{}
		}
	}
	return m
}

// applyPatch applies an RFC 6902 JSON Patch to a mapping's lists: add,
// remove and replace on /backend_roles, /users, /hosts (whole list, /N or
// /- to append). It returns an error message, or "" when it applied all.
func applyPatch(m *SecMapping, body []byte) string {
	var ops []struct {
		Op    string          `json:"op"`
		Path  string          `json:"path"`
		Value json.RawMessage `json:"value"`
	}
	if err := json.Unmarshal(body, &ops); err != nil {
		return "Could not parse content of request: " + err.Error()
	}
	if len(ops) == 0 {
		return "Request body must be a non-empty JSON Patch array"
	}
	lists := map[string]*[]string{"backend_roles": &m.BackendRoles, "users": &m.Users, "hosts": &m.Hosts, "and_backend_roles": &m.AndBackendRoles}
	for _, op := range ops {
		parts := strings.Split(strings.TrimPrefix(op.Path, "/"), "/")
		l, ok := lists[parts[0]]
		if !ok || !strings.HasPrefix(op.Path, "/") || len(parts) > 2 {
			return fmt.Sprintf("Invalid path %q", op.Path)
		}
		switch {
		case len(parts) == 1: // the whole list
			switch op.Op {
			case "add", "replace":
				var v []string
				if err := json.Unmarshal(op.Value, &v); err != nil {
					return fmt.Sprintf("%s %s: value must be a list of strings", op.Op, op.Path)
				}
				*l = v
			case "remove":
				*l = []string{}
			default:
				return fmt.Sprintf("unsupported op %q", op.Op)
			}
		default: // one element: /N or /-
			var v string
			if op.Op != "remove" {
				if err := json.Unmarshal(op.Value, &v); err != nil {
					return fmt.Sprintf("%s %s: value must be a string", op.Op, op.Path)
				}
			}
			i := len(*l)
			if parts[1] != "-" {
				n, err := strconv.Atoi(parts[1])
				if err != nil || n < 0 || n > len(*l) || (op.Op != "add" && n == len(*l)) {
					return fmt.Sprintf("Invalid index in path %q", op.Path)
				}
				i = n
			} else if op.Op != "add" {
				return fmt.Sprintf("%q is only valid with add", op.Path)
			}
			switch op.Op {
			case "add":
				*l = slices.Insert(*l, i, v)
			case "replace":
				(*l)[i] = v
			case "remove":
				*l = slices.Delete(*l, i, i+1)
			default:
				return fmt.Sprintf("unsupported op %q", op.Op)
			}
		}
	}
	return ""
}
