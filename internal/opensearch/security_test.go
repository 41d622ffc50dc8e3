package opensearch_test

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/originlens/originlens/internal/opensearch"
	"github.com/originlens/originlens/internal/opensearchtest"
)

const ingestARN = "arn:aws:iam::123456789012:role/originlens-Ingest-1ABC-IngestRole-XYZ"

// TestMapBackendRoleCreates maps the ingest's IAM role on a cluster that
// has no originlens role yet: the role and its mapping are created, and the
// built-in all_access mapping is left alone.
func TestMapBackendRoleCreates(t *testing.T) {
	srv := opensearchtest.NewServer()
	defer srv.Close()
	srv.SetRoleMapping("all_access", opensearchtest.SecMapping{Users: []string{"admin"}})
	c := newClient(t, srv.URL)

	res, err := c.MapBackendRole(t.Context(), opensearch.IngestRoleName, opensearch.IngestRole("conn-events-"), ingestARN)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Created || res.RoleStatus != "CREATED" || res.AlreadyMapped {
		t.Errorf("result %+v, want role and mapping created", res)
	}
	m, ok := srv.RoleMapping(opensearch.IngestRoleName)
	if !ok || !slices.Equal(m.BackendRoles, []string{ingestARN}) {
		t.Errorf("mapping %+v (found %v), want backend_roles [%s]", m, ok, ingestARN)
	}
	all, _ := srv.RoleMapping("all_access")
	if len(all.BackendRoles) != 0 || !slices.Equal(all.Users, []string{"admin"}) {
		t.Errorf("all_access mapping changed: %+v", all)
	}
	raw, ok := srv.Role(opensearch.IngestRoleName)
	if !ok {
		t.Fatal("role not stored")
	}
	var role opensearch.Role
	if err := json.Unmarshal(raw, &role); err != nil {
		t.Fatal(err)
	}
	if len(role.IndexPermissions) == 0 || !slices.Equal(role.IndexPermissions[0].IndexPatterns, []string{"conn-events-*"}) {
		t.Errorf("stored role %s: want its first index permission on conn-events-*", raw)
	}
	if unhandled := srv.Unhandled(); len(unhandled) > 0 {
		t.Errorf("requests the stand-in does not implement: %v", unhandled)
	}
}

// TestMapBackendRoleKeepsExisting: a mapping that already names another
// backend role and a user keeps both; mapping twice changes nothing.
func TestMapBackendRoleKeepsExisting(t *testing.T) {
	srv := opensearchtest.NewServer()
	defer srv.Close()
	const other = "arn:aws:iam::123456789012:role/ops-readers"
	srv.SetRoleMapping(opensearch.IngestRoleName, opensearchtest.SecMapping{BackendRoles: []string{other}, Users: []string{"alice"}, Hosts: []string{"10.0.0.0/8"}})
	c := newClient(t, srv.URL)
	for i := range 2 {
		res, err := c.MapBackendRole(t.Context(), opensearch.IngestRoleName, opensearch.IngestRole("conn-events-"), ingestARN)
		if err != nil {
			t.Fatal(err)
		}
		if res.Created || res.AlreadyMapped != (i == 1) || res.RoleStatus != "OK" {
			t.Errorf("run %d: result %+v", i, res)
		}
		m, _ := srv.RoleMapping(opensearch.IngestRoleName)
		if !slices.Equal(m.BackendRoles, []string{other, ingestARN}) || !slices.Equal(m.Users, []string{"alice"}) || !slices.Equal(m.Hosts, []string{"10.0.0.0/8"}) {
			t.Errorf("run %d: mapping %+v, want %s kept, %s added, alice and the hosts kept", i, m, other, ingestARN)
		}
	}
}

// TestMapBackendRoleErrors: the plugin's refusals come back as
// *StatusError with its message (a reserved role, an unauthorised user).
func TestMapBackendRoleErrors(t *testing.T) {
	srv := opensearchtest.NewServer()
	defer srv.Close()
	c := newClient(t, srv.URL)
	_, err := c.MapBackendRole(t.Context(), "all_access", opensearch.IngestRole("conn-events-"), ingestARN)
	var se *opensearch.StatusError
	if !errors.As(err, &se) || se.Status != 403 || !strings.Contains(se.Reason, "reserved") {
		t.Fatalf("mapping onto the reserved all_access: %v, want a 403 naming the reservation", err)
	}
	if _, ok := srv.RoleMapping("all_access"); ok {
		t.Error("a refused call still created an all_access mapping")
	}
}

// TestIngestRoleIsLeastPrivilege pins what the role may touch: the
// prefix's indices and Dashboards' saved objects, no wildcard index, no
// security or cluster-settings action, and no all_access-like group.
func TestIngestRoleIsLeastPrivilege(t *testing.T) {
	r := opensearch.IngestRole("conn-events-")
	for _, p := range r.IndexPermissions {
		for _, pat := range p.IndexPatterns {
			if pat == "*" || !(strings.HasPrefix(pat, "conn-events-") || strings.HasPrefix(pat, ".kibana") || strings.HasPrefix(pat, ".opensearch_dashboards")) {
				t.Errorf("index pattern %q reaches beyond the ingest's indices", pat)
			}
		}
		for _, a := range p.AllowedActions {
			if a == "*" || a == "indices_all" || a == "indices:*" || strings.HasPrefix(a, "indices:admin/delete") {
				t.Errorf("index action %q is broader than the ingest needs", a)
			}
		}
	}
	need := []string{"indices:admin/index_template/put", "cluster:admin/opendistro/ism/policy/write", "indices:data/write/bulk"}
	for _, a := range need {
		if !slices.Contains(r.ClusterPermissions, a) {
			t.Errorf("cluster permission %s missing: Setup or the writer would get 403", a)
		}
	}
	for _, a := range r.ClusterPermissions {
		if a == "*" || a == "cluster_all" || a == "cluster_manage" || strings.Contains(a, "security") || strings.HasPrefix(a, "cluster:admin/settings") {
			t.Errorf("cluster permission %q is broader than the ingest needs", a)
		}
	}
	if !slices.ContainsFunc(r.IndexPermissions, func(p opensearch.IndexPermission) bool {
		return slices.Contains(p.IndexPatterns, "conn-events-*") && slices.Contains(p.AllowedActions, "crud") && slices.Contains(p.AllowedActions, "create_index")
	}) {
		t.Error("no permission to create and write conn-events-* indices")
	}
}
