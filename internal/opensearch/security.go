package opensearch

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
)

// IngestRoleName is the security plugin role that [IngestRole] defines.
const IngestRoleName = "originlens_ingest"

// Role is a role of the OpenSearch security plugin in the shape
// PUT _plugins/_security/api/roles/<name> takes.
type Role struct {
	Description        string             `json:"description,omitempty"`
	ClusterPermissions []string           `json:"cluster_permissions"`
	IndexPermissions   []IndexPermission  `json:"index_permissions"`
	TenantPermissions  []TenantPermission `json:"tenant_permissions,omitempty"`
}

// IndexPermission grants actions on indices matching patterns.
type IndexPermission struct {
	IndexPatterns  []string `json:"index_patterns"`
	AllowedActions []string `json:"allowed_actions"`
}

// TenantPermission grants Dashboards tenant access.
type TenantPermission struct {
	TenantPatterns []string `json:"tenant_patterns"`
	AllowedActions []string `json:"allowed_actions"`
}

// IngestRole is the least-privilege role for cmd/ingest: what Setup,
// ImportDashboards, the bulk writer and the heat map's searches call, on
// the daily indices prefix+"*" (and the dead-letter and template names
// under it) and nothing else. Unlike all_access it cannot read or write
// other indices, change the security configuration or manage the cluster.
func IngestRole(indexPrefix string) Role {
	return Role{
		Description: "originlens ingest: write " + indexPrefix + "* and manage its index template and ISM policy",
		ClusterPermissions: []string{
			"cluster:monitor/main",                      // GET /: version check
			"cluster:monitor/health",                    // readiness
			"indices:admin/index_template/get",          // Setup
			"indices:admin/index_template/put",          // Setup
			"cluster:admin/opendistro/ism/policy/get",   // Setup reads the policy's seq_no
			"cluster:admin/opendistro/ism/policy/write", // Setup creates or updates it
			"indices:data/write/bulk",                   // _bulk (a cluster-level action; items are checked per index)
			"indices:data/read/msearch",                 // Dashboards' visualisations
		},
		IndexPermissions: []IndexPermission{
			{
				IndexPatterns: []string{indexPrefix + "*"},
				AllowedActions: []string{
					"crud",                          // index, create, read, search
					"create_index",                  // the daily indices
					"indices:admin/mapping/put",     // dynamic:strict still maps new objects of the template
					"indices:admin/refresh*",        // RefreshAndCount
					"indices:monitor/settings/get",  // Dashboards' index pattern
					"indices:admin/mappings/get",    // Dashboards' index pattern fields
					"indices:admin/resolve/index",   // Dashboards' index pattern wizard
					"indices:data/read/field_caps*", // Dashboards' index pattern fields
				},
			},
			{
				// Dashboards' saved objects (the imported dashboards).
				IndexPatterns:  []string{".kibana", ".kibana_*", ".opensearch_dashboards", ".opensearch_dashboards_*"},
				AllowedActions: []string{"crud", "create_index", "indices:admin/mapping/put"},
			},
		},
		TenantPermissions: []TenantPermission{
			{TenantPatterns: []string{"global_tenant"}, AllowedActions: []string{"kibana_all_write"}},
		},
	}
}

// RoleMapping reports what [Client.MapBackendRole] did.
type RoleMapping struct {
	Role          string   // the role name
	RoleStatus    string   // the plugin's status for the role: CREATED or OK (updated)
	Created       bool     // the mapping did not exist and was created
	AlreadyMapped bool     // the backend role was mapped already: nothing changed
	BackendRoles  []string // the mapping's backend roles afterwards
}

// securityPath is the security plugin's REST API.
const securityPath = "/_plugins/_security/api/"

// MapBackendRole creates or updates the role name with the given
// permissions, then maps backendRole (for Amazon OpenSearch Service with
// fine-grained access control, the IAM role ARN that SigV4 requests carry)
// to it without replacing the mapping's other backend roles, users or
// hosts: a missing mapping is created, an existing one gets the backend
// role appended with a JSON Patch. It needs a security administrator's
// credentials (the domain's master user). It is idempotent and blocks until
// done.
func (c *Client) MapBackendRole(ctx context.Context, name string, role Role, backendRole string) (RoleMapping, error) {
	res := RoleMapping{Role: name}
	body, err := json.Marshal(role)
	if err != nil {
		return res, fmt.Errorf("role %s: %w", name, err)
	}
	rolePath := securityPath + "roles/" + url.PathEscape(name)
	status, resp, err := c.call(ctx, http.MethodPut, rolePath, nil, body)
	if err != nil {
		return res, fmt.Errorf("putting role %s: %w", name, err)
	}
	if status/100 != 2 {
		return res, fmt.Errorf("putting role %s: %w", name, securityError("put role", status, resp))
	}
	var st struct {
		Status string `json:"status"`
	}
	_ = json.Unmarshal(resp, &st)
	res.RoleStatus = st.Status

	mapPath := securityPath + "rolesmapping/" + url.PathEscape(name)
	status, resp, err = c.call(ctx, http.MethodGet, mapPath, nil, nil)
	if err != nil {
		return res, fmt.Errorf("getting role mapping %s: %w", name, err)
	}
	switch {
	case status == http.StatusNotFound:
		body, _ := json.Marshal(map[string][]string{"backend_roles": {backendRole}})
		status, resp, err = c.call(ctx, http.MethodPut, mapPath, nil, body)
		if err != nil {
			return res, fmt.Errorf("creating role mapping %s: %w", name, err)
		}
		if status/100 != 2 {
			return res, fmt.Errorf("creating role mapping %s: %w", name, securityError("put role mapping", status, resp))
		}
		res.Created, res.BackendRoles = true, []string{backendRole}
		return res, nil
	case status/100 == 2:
		var cur map[string]struct {
			BackendRoles []string `json:"backend_roles"`
		}
		if err := json.Unmarshal(resp, &cur); err != nil {
			return res, fmt.Errorf("getting role mapping %s: %w", name, err)
		}
		m, ok := cur[name]
		if !ok {
			return res, fmt.Errorf("getting role mapping %s: answer %q has no %q", name, truncate(string(resp), 256), name)
		}
		if slices.Contains(m.BackendRoles, backendRole) {
			res.AlreadyMapped, res.BackendRoles = true, m.BackendRoles
			return res, nil
		}
		// RFC 6902 "add" at "/backend_roles/-" appends; "add" at
		// "/backend_roles" would replace the whole list.
		patch, _ := json.Marshal([]map[string]any{{"op": "add", "path": "/backend_roles/-", "value": backendRole}})
		status, resp, err = c.call(ctx, http.MethodPatch, mapPath, nil, patch)
		if err != nil {
			return res, fmt.Errorf("patching role mapping %s: %w", name, err)
		}
		if status/100 != 2 {
			return res, fmt.Errorf("patching role mapping %s: %w", name, securityError("patch role mapping", status, resp))
		}
		res.BackendRoles = append(slices.Clone(m.BackendRoles), backendRole)
		return res, nil
	default:
		return res, fmt.Errorf("getting role mapping %s: %w", name, securityError("get role mapping", status, resp))
	}
}

// securityError builds a *StatusError from the security plugin's error
// answer, {"status": "FORBIDDEN", "message": "..."}, or OpenSearch's
// error envelope.
func securityError(op string, status int, body []byte) error {
	var e struct {
		Status  string `json:"status"`
		Message string `json:"message"`
	}
	if json.Unmarshal(body, &e) == nil && e.Message != "" {
		return &StatusError{Op: op, Status: status, Type: e.Status, Reason: e.Message}
	}
	return responseError(op, status, body)
}
