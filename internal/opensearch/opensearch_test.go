package opensearch_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/originlens/originlens/deploy/dashboards"
	opensearchassets "github.com/originlens/originlens/deploy/opensearch"
	"github.com/originlens/originlens/internal/opensearch"
	"github.com/originlens/originlens/internal/opensearchtest"
)

func setupConfig(prefix string) opensearch.SetupConfig {
	return opensearch.SetupConfig{
		IndexPrefix:  prefix,
		TemplateName: strings.TrimSuffix(prefix, "-"),
		PolicyID:     strings.TrimSuffix(prefix, "-") + "-retention",
		Retention:    "30d",
		Template:     opensearchassets.IndexTemplate,
		Policy:       opensearchassets.ISMPolicy,
	}
}

func newClient(t testing.TB, url string) *opensearch.Client {
	t.Helper()
	c, err := opensearch.New(t.Context(), opensearch.Config{URLs: []string{url}, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// bulkBody builds a create request for docs keyed by id.
func bulkBody(t testing.TB, index string, docs map[string][]byte, order []string) []byte {
	t.Helper()
	var b bytes.Buffer
	for _, id := range order {
		fmt.Fprintf(&b, `{"create":{"_index":%q,"_id":%q}}`+"\n", index, id)
		b.Write(docs[id])
		b.WriteByte('\n')
	}
	return b.Bytes()
}

func TestSetupIdempotent(t *testing.T) {
	srv := opensearchtest.NewServer()
	defer srv.Close()
	c := newClient(t, srv.URL)
	sc := setupConfig("conn-events-")
	for i := 0; i < 2; i++ {
		if err := c.Setup(t.Context(), sc); err != nil {
			t.Fatalf("Setup #%d: %v", i+1, err)
		}
	}
	tpl, ok := srv.Template("conn-events")
	if !ok {
		t.Fatal("no index template after Setup")
	}
	if !bytes.Contains(tpl, []byte(`"index_patterns":["conn-events-*"]`)) {
		t.Errorf("template index_patterns: %s", tpl)
	}
	pol, version, ok := srv.Policy("conn-events-retention")
	if !ok {
		t.Fatal("no ISM policy after Setup")
	}
	if version != 2 {
		t.Errorf("policy version after two setups = %d, want 2 (created, then updated with if_seq_no)", version)
	}
	if !bytes.Contains(pol, []byte(`"min_index_age":"30d"`)) || !bytes.Contains(pol, []byte(`"index_patterns":["conn-events-*"]`)) {
		t.Errorf("policy = %s", pol)
	}
	if u := srv.Unhandled(); len(u) > 0 {
		t.Errorf("unhandled requests: %v", u)
	}
}

func TestSetupRetentionAndPrefix(t *testing.T) {
	srv := opensearchtest.NewServer()
	defer srv.Close()
	c := newClient(t, srv.URL)
	sc := setupConfig("lab-conn-")
	sc.Retention = "7d"
	if err := c.Setup(t.Context(), sc); err != nil {
		t.Fatal(err)
	}
	pol, _, _ := srv.Policy("lab-conn-retention")
	if !bytes.Contains(pol, []byte(`"min_index_age":"7d"`)) || !bytes.Contains(pol, []byte(`"lab-conn-*"`)) {
		t.Errorf("policy = %s", pol)
	}
	sc.Retention = "30 days"
	if err := c.Setup(t.Context(), sc); err == nil {
		t.Error("Setup with retention \"30 days\" succeeded, want an error")
	}
}

func TestBulkOutcomes(t *testing.T) {
	srv := opensearchtest.NewServer()
	defer srv.Close()
	c := newClient(t, srv.URL)
	if err := c.Setup(t.Context(), setupConfig("conn-events-")); err != nil {
		t.Fatal(err)
	}
	ts := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	ev := opensearchtest.SampleEvent(1, ts)
	good, _ := ev.Marshal()
	unmapped := bytes.Replace(good, []byte(`"ecs":{`), []byte(`"surprise":1,"ecs":{`), 1)
	badIP := bytes.Replace(good, []byte(`"198.51.100.10"`), []byte(`"not-an-ip"`), 1)
	docs := map[string][]byte{"a": good, "b": unmapped, "c": badIP}
	resp, err := c.Bulk(t.Context(), bulkBody(t, "conn-events-2026.11.27", docs, []string{"a", "b", "c", "a"}))
	if err != nil {
		t.Fatal(err)
	}
	if !resp.Errors {
		t.Error("errors flag false, want true")
	}
	tests := []struct {
		id      string
		status  int
		errType string
		outcome opensearch.Outcome
	}{
		{"a", 201, "", opensearch.Indexed},
		{"b", 400, "strict_dynamic_mapping_exception", opensearch.DeadLetter},
		{"c", 400, "mapper_parsing_exception", opensearch.DeadLetter},
		{"a", 409, "version_conflict_engine_exception", opensearch.Indexed},
	}
	if len(resp.Items) != len(tests) {
		t.Fatalf("got %d items, want %d", len(resp.Items), len(tests))
	}
	for i, tt := range tests {
		it := resp.Items[i]
		if it.ID != tt.id || it.Status != tt.status || it.ErrType != tt.errType {
			t.Errorf("item %d = {%s %d %s %q}, want {%s %d %s}", i, it.ID, it.Status, it.ErrType, it.ErrReason, tt.id, tt.status, tt.errType)
		}
		if got := opensearch.Classify(it); got != tt.outcome {
			t.Errorf("Classify(item %d) = %v, want %v", i, got, tt.outcome)
		}
	}
	if n := srv.Count("conn-events-*"); n != 1 {
		t.Errorf("Count = %d, want 1", n)
	}
	if n, err := c.RefreshAndCount(t.Context(), "conn-events-*"); err != nil || n != 1 {
		t.Errorf("RefreshAndCount = %d, %v; want 1", n, err)
	}
}

func TestBulkFaults(t *testing.T) {
	srv := opensearchtest.NewServer()
	defer srv.Close()
	c := newClient(t, srv.URL)
	ts := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	doc := func(i int) map[string][]byte {
		ev := opensearchtest.SampleEvent(i, ts)
		b, _ := ev.Marshal()
		return map[string][]byte{ev.Event.ID: b}
	}
	one := func(i int) []byte {
		d := doc(i)
		for id := range d {
			return bulkBody(t, "conn-events-2026.11.27", d, []string{id})
		}
		return nil
	}

	t.Run("unavailable", func(t *testing.T) {
		srv.FailRequests(1)
		_, err := c.Bulk(t.Context(), one(1))
		var se *opensearch.StatusError
		if !errors.As(err, &se) || se.Status != 503 {
			t.Fatalf("Bulk = %v, want a 503 StatusError", err)
		}
		if got := opensearch.ClassifyError(err); got != opensearch.Retry {
			t.Errorf("ClassifyError = %v, want retry", got)
		}
	})
	t.Run("rejected", func(t *testing.T) {
		srv.SetRejectRate(1)
		defer srv.SetRejectRate(0)
		resp, err := c.Bulk(t.Context(), one(2))
		if err != nil {
			t.Fatal(err)
		}
		if it := resp.Items[0]; it.Status != 429 || opensearch.Classify(it) != opensearch.Retry {
			t.Errorf("item = %+v, want 429 retry", it)
		}
	})
	for _, status := range []int{403, 429} {
		t.Run(fmt.Sprintf("flood_stage_%d", status), func(t *testing.T) {
			srv.SetWriteBlock(status)
			defer srv.SetWriteBlock(0)
			resp, err := c.Bulk(t.Context(), one(3))
			if err != nil {
				t.Fatal(err)
			}
			if it := resp.Items[0]; it.ErrType != "cluster_block_exception" || opensearch.Classify(it) != opensearch.Blocked {
				t.Errorf("item = %+v, want cluster_block_exception blocked", it)
			}
		})
	}
	t.Run("slow", func(t *testing.T) {
		srv.SetDelay(300 * time.Millisecond)
		defer srv.SetDelay(0)
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		defer cancel()
		_, err := c.Bulk(ctx, one(4))
		if err == nil {
			t.Fatal("Bulk on a slow server with a 50ms deadline succeeded")
		}
		if got := opensearch.ClassifyError(err); got != opensearch.Retry {
			t.Errorf("ClassifyError(%v) = %v, want retry", err, got)
		}
	})
	if n := srv.Count("conn-events-*"); n != 0 {
		t.Errorf("Count = %d, want 0: every request above failed", n)
	}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		name string
		item opensearch.BulkItem
		want opensearch.Outcome
	}{
		{"created", opensearch.BulkItem{Status: 201}, opensearch.Indexed},
		{"duplicate", opensearch.BulkItem{Status: 409, ErrType: "version_conflict_engine_exception"}, opensearch.Indexed},
		{"rejected", opensearch.BulkItem{Status: 429, ErrType: "es_rejected_execution_exception"}, opensearch.Retry},
		{"unavailable", opensearch.BulkItem{Status: 503, ErrType: "unavailable_shards_exception"}, opensearch.Retry},
		{"mapping", opensearch.BulkItem{Status: 400, ErrType: "mapper_parsing_exception"}, opensearch.DeadLetter},
		{"flood403", opensearch.BulkItem{Status: 403, ErrType: "cluster_block_exception"}, opensearch.Blocked},
		{"flood429", opensearch.BulkItem{Status: 429, ErrType: "cluster_block_exception"}, opensearch.Blocked},
		{"forbidden", opensearch.BulkItem{Status: 403, ErrType: "security_exception"}, opensearch.Blocked},
		{"noindex", opensearch.BulkItem{Status: 404, ErrType: "index_not_found_exception"}, opensearch.Blocked},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := opensearch.Classify(tt.item); got != tt.want {
				t.Errorf("Classify(%+v) = %v, want %v", tt.item, got, tt.want)
			}
		})
	}
}

func TestImportDashboards(t *testing.T) {
	srv := opensearchtest.NewServer()
	defer srv.Close()
	c := newClient(t, srv.URL)
	var files []opensearch.DashboardsFile
	for _, f := range dashboards.Files() {
		files = append(files, opensearch.DashboardsFile{Name: f.Name, Data: f.Data})
	}
	if len(files) == 0 {
		t.Fatal("no embedded dashboards")
	}
	for i := 0; i < 2; i++ { // overwrite=true: the second import succeeds too
		if err := c.ImportDashboards(t.Context(), srv.URL, "lab-", files); err != nil {
			t.Fatalf("import #%d: %v", i+1, err)
		}
	}
	ip, ok := srv.SavedObject("index-pattern", "conn-events")
	if !ok || !bytes.Contains(ip, []byte(`"title":"lab-*"`)) {
		t.Errorf("index pattern = %s, want title lab-*", ip)
	}
	if _, ok := srv.SavedObject("dashboard", "originlens-connections"); !ok {
		t.Error("dashboard not imported")
	}
	// behind the managed service's base path
	if err := c.ImportDashboards(t.Context(), srv.URL+"/_dashboards", "conn-events-", files); err != nil {
		t.Errorf("import under /_dashboards: %v", err)
	}
}

// TestRealCluster runs setup, indexes a few events and counts them on the
// cluster at OPENSEARCH_URL (user and password from OPENSEARCH_USER and
// OPENSEARCH_PASSWORD; OPENSEARCH_INSECURE=1 for self-signed certificates).
func TestRealCluster(t *testing.T) {
	url := os.Getenv("OPENSEARCH_URL")
	if url == "" {
		t.Skip("OPENSEARCH_URL not set: skipping the real-cluster test (e.g. OPENSEARCH_URL=https://localhost:9200 OPENSEARCH_USER=admin OPENSEARCH_PASSWORD=... OPENSEARCH_INSECURE=1)")
	}
	c, err := opensearch.New(t.Context(), opensearch.Config{URLs: []string{url}, Username: os.Getenv("OPENSEARCH_USER"), Password: os.Getenv("OPENSEARCH_PASSWORD"), Insecure: os.Getenv("OPENSEARCH_INSECURE") == "1"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	prefix := fmt.Sprintf("originlens-test-%d-", time.Now().UnixNano())
	if err := c.Setup(t.Context(), setupConfig(prefix)); err != nil {
		t.Fatal(err)
	}
	ts := time.Now().UTC()
	index := prefix + ts.Format("2006.01.02")
	docs := map[string][]byte{}
	var order []string
	for i := 0; i < 5; i++ {
		ev := opensearchtest.SampleEvent(i, ts)
		b, _ := ev.Marshal()
		docs[ev.Event.ID] = b
		order = append(order, ev.Event.ID)
	}
	for round := 0; round < 2; round++ { // the second round is all 409s
		resp, err := c.Bulk(t.Context(), bulkBody(t, index, docs, order))
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range resp.Items {
			if opensearch.Classify(it) != opensearch.Indexed {
				t.Errorf("round %d: item %+v not indexed", round, it)
			}
		}
	}
	n, err := c.RefreshAndCount(t.Context(), prefix+"*")
	if err != nil {
		t.Fatal(err)
	}
	if n != len(docs) {
		t.Errorf("count = %d, want %d", n, len(docs))
	}
	if err := c.Teardown(context.WithoutCancel(t.Context()), setupConfig(prefix)); err != nil {
		t.Errorf("Teardown: %v", err)
	}
}
