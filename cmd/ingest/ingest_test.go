package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/originlens/originlens/internal/event"
	"github.com/originlens/originlens/internal/opensearchtest"
	"github.com/originlens/originlens/internal/syncbuf"
)

const (
	topic    = "conn-events"
	dlqTopic = "conn-events-dlq"
	group    = "originlens-ingest"
)

func TestParseConfig(t *testing.T) {
	base := []string{"--kafka-brokers", "127.0.0.1:9092", "--opensearch-url", "http://127.0.0.1:9200"}
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr string
		check   func(Config) string
	}{
		{"defaults", base, nil, "", func(c Config) string {
			if c.BulkBytes != 5<<20 || c.FlushInterval != time.Second || c.Retention != "30d" || c.DLQTopic != "conn-events-dlq" || c.Admin.String() != "127.0.0.1:9091" || c.UI.String() != "127.0.0.1:8088" {
				return fmt.Sprintf("%+v", c)
			}
			return ""
		}},
		{"env_fallback", []string{"--opensearch-url", "http://127.0.0.1:9200"}, map[string]string{"INGEST_KAFKA_BROKERS": "a:1,b:2", "INGEST_BULK_BYTES": "512KiB", "INGEST_UI": ""}, "", func(c Config) string {
			if len(c.KafkaBrokers) != 2 || c.BulkBytes != 512<<10 || c.UI.IsValid() {
				return fmt.Sprintf("brokers %v bulk %d ui %v", c.KafkaBrokers, c.BulkBytes, c.UI)
			}
			return ""
		}},
		{"flag_beats_env", append(base, "--group", "g1"), map[string]string{"INGEST_GROUP": "g2"}, "", func(c Config) string {
			if c.Group != "g1" {
				return c.Group
			}
			return ""
		}},
		{"setup_needs_no_brokers", []string{"setup", "--opensearch-url", "https://search.example:443", "--dashboards-url", "https://search.example/_dashboards"}, nil, "", func(c Config) string {
			if !c.SetupOnly {
				return "SetupOnly false"
			}
			return ""
		}},
		{"sigv4", append(base, "--aws-sigv4", "eu-central-1"), nil, "", func(c Config) string {
			if c.OpenSearch.AWSRegion != "eu-central-1" || c.OpenSearch.AWSService != "es" {
				return fmt.Sprintf("%+v", c.OpenSearch)
			}
			return ""
		}},
		{"no_brokers", []string{"--opensearch-url", "http://x:9200"}, nil, "--kafka-brokers is required", nil},
		{"bad_url", []string{"--kafka-brokers", "a:1", "--opensearch-url", "localhost:9200"}, nil, "want http(s)://host:port", nil},
		{"bad_retention", append(base, "--retention", "30 days"), nil, "--retention", nil},
		{"bad_prefix", append(base, "--index-prefix", "Conn-"), nil, "lowercase", nil},
		{"sigv4_and_basic", append(base, "--aws-sigv4", "eu-central-1", "--opensearch-user", "u", "--opensearch-password", "p"), nil, "exclude each other", nil},
		{"bad_admin", append(base, "--admin", "localhost:9091"), nil, "--admin", nil},
		{"bad_size", append(base, "--bulk-bytes", "5 lots"), nil, "bulk-bytes", nil},
		{"huge_bulk", append(base, "--bulk-bytes", "200MiB"), nil, "100MiB", nil},
		{"bad_env", base, map[string]string{"INGEST_FLUSH_INTERVAL": "soon"}, "INGEST_FLUSH_INTERVAL", nil},
		{"no_opensearch", []string{"--kafka-brokers", "127.0.0.1:9092"}, nil, "", func(c Config) string {
			if len(c.OpenSearch.URLs) != 0 {
				return fmt.Sprintf("%+v", c.OpenSearch)
			}
			return ""
		}},
		{"setup_needs_opensearch", []string{"setup"}, nil, "--opensearch-url is required", nil},
		{"dashboards_need_opensearch", []string{"--kafka-brokers", "127.0.0.1:9092", "--dashboards-url", "http://127.0.0.1:5601"}, nil, "--dashboards-url \"http://127.0.0.1:5601\" needs --opensearch-url, e.g. --opensearch-url https://localhost:9200", nil},
		{"dlq_is_topic", append(base, "--dlq-topic", "conn-events"), nil, "must differ", nil},
		{"scram_without_password", append(base, "--kafka-sasl", "scram-sha-512", "--kafka-username", "u"), nil, "needs --kafka-username and --kafka-password", nil},
		{"iam_without_tls", append(base, "--kafka-sasl", "aws-msk-iam"), nil, "needs --kafka-tls", nil},
		{"unknown_sasl", append(base, "--kafka-sasl", "plain"), nil, "want none, scram-sha-512 or aws-msk-iam", nil},
		{"ca_without_tls", append(base, "--kafka-ca-file", "/etc/ssl/ca.pem"), nil, "--kafka-ca-file needs --kafka-tls", nil},
		{"password_without_sasl", append(base, "--kafka-username", "u", "--kafka-password", "p"), nil, "needs --kafka-sasl scram-sha-512", nil},
		{"scram_ok", append(base, "--kafka-sasl", "scram-sha-512", "--kafka-username", "u", "--kafka-password", "p", "--kafka-tls"), nil, "", func(c Config) string {
			if c.Security.SASL != "scram-sha-512" || !c.Security.TLS {
				return fmt.Sprintf("%+v", c.Security)
			}
			return ""
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lookup := func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok }
			cfg, err := parseConfig(tt.args, lookup, io.Discard)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseConfig(%q) error = %v, want one containing %q", tt.args, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseConfig(%q) = %v", tt.args, err)
			}
			if msg := tt.check(cfg); msg != "" {
				t.Errorf("parseConfig(%q): %s", tt.args, msg)
			}
		})
	}
}

// ---- shared helpers for the end-to-end and crash tests ----

type kafkaEnv struct {
	brokers []string
	prod    *kgo.Client
	cluster *kfake.Cluster
}

func newKafka(t testing.TB, partitions int32) *kafkaEnv {
	t.Helper()
	return newKafkaOpts(t, kfake.NumBrokers(1), kfake.SeedTopics(partitions, topic), kfake.SeedTopics(1, dlqTopic))
}

func newKafkaOpts(t testing.TB, opts ...kfake.Opt) *kafkaEnv {
	t.Helper()
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	prod, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.DefaultProduceTopic(topic), kgo.ProducerLinger(2*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(prod.Close)
	return &kafkaEnv{brokers: c.ListenAddrs(), prod: prod, cluster: c}
}

func (k *kafkaEnv) produceEvents(t testing.TB, from, to int, ts time.Time) {
	t.Helper()
	var recs []*kgo.Record
	for i := from; i < to; i++ {
		ev := opensearchtest.SampleEvent(i, ts)
		b, err := ev.Marshal()
		if err != nil {
			t.Error(err)
			return
		}
		recs = append(recs, &kgo.Record{Key: ev.Key(), Value: b, Headers: []kgo.RecordHeader{{Key: event.HeaderSchemaVersion, Value: []byte(event.SchemaVersion)}}})
	}
	if err := k.prod.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Error(err)
	}
}

func (k *kafkaEnv) lagZero(t testing.TB) bool {
	t.Helper()
	conn, err := kafkago.Dial("tcp", k.brokers[0])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	parts, err := conn.ReadPartitions(topic)
	if err != nil {
		t.Fatal(err)
	}
	end := map[int]int64{}
	var ids []int
	for _, p := range parts {
		pc, err := kafkago.DialLeader(context.Background(), "tcp", k.brokers[0], topic, p.ID)
		if err != nil {
			t.Fatal(err)
		}
		last, err := pc.ReadLastOffset()
		pc.Close()
		if err != nil {
			t.Fatal(err)
		}
		end[p.ID] = last
		ids = append(ids, p.ID)
	}
	cl := &kafkago.Client{Addr: kafkago.TCP(k.brokers...)}
	resp, err := cl.OffsetFetch(context.Background(), &kafkago.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: ids}})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range resp.Topics[topic] {
		if p.CommittedOffset != end[p.Partition] {
			return false
		}
	}
	return len(resp.Topics[topic]) == len(ids)
}

func waitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer = syncbuf.Buffer

var adminRE = regexp.MustCompile(`msg="admin listening" addr=(\S+)`)

// TestRun runs the service in-process: setup with dashboards, events and a
// poison message, metrics and readiness, clean shutdown.
func TestRun(t *testing.T) {
	k := newKafka(t, 2)
	srv := opensearchtest.NewServer()
	defer srv.Close()
	srv.SetRejectRate(0.1)
	const n = 500
	k.produceEvents(t, 0, n, time.Now())
	if err := k.prod.ProduceSync(context.Background(), &kgo.Record{Value: []byte("not json")}).FirstErr(); err != nil {
		t.Fatal(err)
	}

	cfg, err := parseConfig([]string{"--kafka-brokers", strings.Join(k.brokers, ","), "--opensearch-url", srv.URL, "--dashboards-url", srv.URL,
		"--admin", "127.0.0.1:0", "--ui", "127.0.0.1:0", "--flush-interval", "20ms", "--bulk-bytes", "64KiB"}, func(string) (string, bool) { return "", false }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var logs syncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, io.Discard, &logs) }()
	stopped := false
	defer func() {
		if !stopped {
			cancel()
			<-done
		}
	}()

	waitFor(t, "every event indexed", 60*time.Second, func() bool { return srv.Count("conn-events-*") == n })
	waitFor(t, "offsets committed", 60*time.Second, func() bool { return k.lagZero(t) })
	m := adminRE.FindStringSubmatch(logs.String())
	if m == nil {
		t.Fatalf("no admin address in the logs:\n%s", logs.String())
	}
	admin := "http://" + m[1]
	if code, body := get(t, admin+"/readyz"); code != 200 {
		t.Errorf("/readyz = %d %s", code, body)
	}
	if code, _ := get(t, admin+"/healthz"); code != 200 {
		t.Errorf("/healthz = %d", code)
	}
	_, metrics := get(t, admin+"/metrics")
	for _, want := range []string{
		fmt.Sprintf("ingest_docs_indexed_total %d", n),
		`ingest_docs_dead_lettered_total{reason="invalid"} 1`,
		`ingest_docs_retried_total{reason="rejected"}`,
		`ingest_consumer_lag{partition="0",topic="conn-events"} 0`,
		"ingest_bulk_duration_seconds_count",
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if _, ok := srv.SavedObject("dashboard", "originlens-connections"); !ok {
		t.Error("dashboards not imported")
	}
	if u := srv.Unhandled(); len(u) > 0 {
		t.Errorf("requests the stand-in does not implement: %v", u)
	}
	cancel()
	stopped = true
	if err := <-done; err != nil {
		t.Errorf("run = %v after cancel, want nil", err)
	}
}

func get(t testing.TB, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestSetupCommand runs "ingest setup" twice: idempotent.
func TestSetupCommand(t *testing.T) {
	srv := opensearchtest.NewServer()
	defer srv.Close()
	for i := 0; i < 2; i++ {
		cfg, err := parseConfig([]string{"setup", "--opensearch-url", srv.URL, "--dashboards-url", srv.URL + "/_dashboards", "--retention", "14d"}, func(string) (string, bool) { return "", false }, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		if err := run(t.Context(), cfg, &out, io.Discard); err != nil {
			t.Fatalf("setup #%d: %v", i+1, err)
		}
		if !strings.Contains(out.String(), "/_dashboards/app/dashboards#/view/originlens-connections") {
			t.Errorf("setup output %q lacks the dashboard link", out.String())
		}
	}
	if p, v, ok := srv.Policy("conn-events-retention"); !ok || v != 2 || !bytes.Contains(p, []byte(`"14d"`)) {
		t.Errorf("policy = %s version %d", p, v)
	}
}

// TestCrash builds the binary, streams events with 429s injected, kills
// the process with SIGKILL in the middle of the stream, restarts it, and
// checks that the index ends with exactly one document per event.
func TestCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary: skipped with -short")
	}
	bin := filepath.Join(t.TempDir(), "ingest")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	k := newKafka(t, 3)
	srv := opensearchtest.NewServer()
	defer srv.Close()
	srv.SetRejectRate(0.15)

	const n = 6000
	ts := time.Now()
	produced := make(chan struct{})
	go func() { // the stream: 60 records every 10ms
		defer close(produced)
		for i := 0; i < n; i += 60 {
			k.produceEvents(t, i, min(i+60, n), ts)
			time.Sleep(10 * time.Millisecond)
		}
	}()

	start := func(name string) (*exec.Cmd, *syncBuffer) {
		logs := &syncBuffer{}
		cmd := exec.Command(bin, "--kafka-brokers", strings.Join(k.brokers, ","), "--opensearch-url", srv.URL,
			"--admin", "127.0.0.1:0", "--ui", "", "--kafka-session-timeout", "6s", "--flush-interval", "20ms", "--bulk-bytes", "32KiB", "--retry-max-backoff", "200ms")
		cmd.Stdout, cmd.Stderr = logs, logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if cmd.ProcessState == nil {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
			}
			if t.Failed() {
				t.Logf("%s logs:\n%s", name, tail(logs.String(), 4000))
			}
		})
		return cmd, logs
	}

	// Slow bulk answers keep the first process from indexing the rest of
	// the stream between the poll that sees a quarter and the kill, even
	// when a busy machine delays this test's goroutine.
	srv.SetDelay(50 * time.Millisecond)
	first, _ := start("first")
	waitFor(t, "a first part of the stream indexed", 60*time.Second, func() bool { return srv.Count("conn-events-*") >= n/4 })
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	srv.SetDelay(0)
	err := first.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("first process ended with %v, want killed", err)
	}
	atKill := srv.Count("conn-events-*")
	if atKill >= n {
		t.Fatalf("the whole stream was indexed before the kill (%d): not a mid-stream crash", atKill)
	}

	second, _ := start("second")
	<-produced
	waitFor(t, "every event indexed after the restart", 90*time.Second, func() bool { return srv.Count("conn-events-*") >= n })
	waitFor(t, "offsets committed to the end", 60*time.Second, func() bool { return k.lagZero(t) })
	if err := second.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := second.Wait(); err != nil {
		t.Errorf("second process after SIGTERM: %v, want exit 0", err)
	}

	if got := srv.Count("conn-events-*"); got != n {
		t.Errorf("documents = %d, want exactly %d", got, n)
	}
	ids := srv.IDs("conn-events-*")
	if len(ids) != n {
		t.Errorf("distinct _ids = %d, want %d", len(ids), n)
	}
	for id, c := range ids {
		if c != 1 {
			t.Errorf("_id %s stored %d times", id, c)
		}
	}
	_, rejected := srv.Stats()
	t.Logf("killed at %d/%d documents; %d items rejected with 429; %d redelivered creates answered 409", atKill, n, rejected, srv.Conflicts())
	if rejected == 0 {
		t.Error("no 429 was injected")
	}
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}

func FuzzByteSize(f *testing.F) {
	for _, s := range []string{"5MiB", "512KiB", "1048576", "1GB", "-1", "9999999999999GiB", "MiB", " 7 KiB"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var b byteSize
		if err := b.Set(s); err != nil {
			return
		}
		if b < 0 {
			t.Errorf("Set(%q) = %d, want non-negative", s, b)
		}
		var again byteSize
		if err := again.Set(b.String()); err != nil || again != b {
			t.Errorf("Set(String()) of %q = %d, %v; want %d", s, again, err, b)
		}
	})
}

var uiRE = regexp.MustCompile(`msg="heat map listening" url=(\S+)`)

// TestRunWithoutOpenSearch runs with no --opensearch-url against a broker
// without the dead-letter topic: the ingest creates the topic, consumes
// into its in-memory heat map, dead-letters a poison message, commits to
// the end, and warns once that nothing is indexed.
func TestRunWithoutOpenSearch(t *testing.T) {
	k := newKafkaOpts(t, kfake.NumBrokers(1), kfake.SeedTopics(2, topic))
	const n = 200
	k.produceEvents(t, 0, n, time.Now())
	if err := k.prod.ProduceSync(context.Background(), &kgo.Record{Value: []byte("not json")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	cfg, err := parseConfig([]string{"--kafka-brokers", strings.Join(k.brokers, ","), "--admin", "127.0.0.1:0", "--ui", "127.0.0.1:0", "--flush-interval", "20ms"},
		func(string) (string, bool) { return "", false }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var logs syncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, io.Discard, &logs) }()
	defer func() { cancel(); <-done }()

	waitFor(t, "offsets committed", 60*time.Second, func() bool { return k.lagZero(t) })
	m := uiRE.FindStringSubmatch(logs.String())
	if m == nil {
		t.Fatalf("no heat-map address in the logs:\n%s", logs.String())
	}
	code, body := get(t, m[1]+"api/heatmap")
	var snap struct {
		Source string `json:"source"`
		Totals struct {
			Events int64 `json:"events"`
		} `json:"totals"`
		Countries []struct {
			ISO string `json:"iso"`
		} `json:"countries"`
	}
	if err := json.Unmarshal([]byte(body), &snap); err != nil || code != 200 {
		t.Fatalf("/api/heatmap = %d %s (%v)", code, body, err)
	}
	if snap.Source != "memory" || snap.Totals.Events != n || len(snap.Countries) == 0 {
		t.Errorf("/api/heatmap = %s, want %d events from memory with countries", body, n)
	}
	if got := strings.Count(logs.String(), "NOTHING IS INDEXED"); got != 1 {
		t.Errorf("the no-index warning was logged %d times, want once:\n%s", got, logs.String())
	}
	if !strings.Contains(logs.String(), `msg="dead-letter topic ready" topic=`+dlqTopic) {
		t.Errorf("no dead-letter topic creation in the logs:\n%s", logs.String())
	}
	if recs := readTopic(t, k.brokers, dlqTopic, 1); string(recs[0].Value) != "not json" {
		t.Errorf("DLQ record = %q, want the poison message", recs[0].Value)
	}
	m = adminRE.FindStringSubmatch(logs.String())
	if code, body := get(t, "http://"+m[1]+"/readyz"); code != 200 {
		t.Errorf("/readyz = %d %s", code, body)
	}
}

// TestDLQTopicNotPermitted: a broker that refuses CreateTopics gets a loud
// error naming the topic, and the ingest goes on.
func TestDLQTopicNotPermitted(t *testing.T) {
	k := newKafkaOpts(t, kfake.NumBrokers(1), kfake.SeedTopics(1, topic))
	var refuse atomic.Bool
	refuse.Store(true)
	k.cluster.ControlKey(int16(kmsg.CreateTopics), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		k.cluster.KeepControl()
		if !refuse.Load() {
			return nil, nil, false
		}
		req := kreq.(*kmsg.CreateTopicsRequest)
		resp := req.ResponseKind().(*kmsg.CreateTopicsResponse)
		for _, rt := range req.Topics {
			st := kmsg.NewCreateTopicsResponseTopic()
			st.Topic = rt.Topic
			st.ErrorCode = kerr.TopicAuthorizationFailed.Code
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	cfg := Config{KafkaBrokers: k.brokers, DLQTopic: "dlq-refused"}
	transport, err := cfg.Security.Transport(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	ensureDLQTopic(t.Context(), log, cfg, transport)
	if out := logs.String(); !strings.Contains(out, "DEAD-LETTER TOPIC NOT CREATED") || !strings.Contains(out, "topic=dlq-refused") || !strings.Contains(out, "level=ERROR") {
		t.Errorf("logs = %q, want a loud error naming dlq-refused", out)
	}
	// An existing topic is fine.
	logs = syncBuffer{}
	cfg.DLQTopic = topic
	refuse.Store(false)
	ensureDLQTopic(t.Context(), log, cfg, transport)
	if out := logs.String(); !strings.Contains(out, "dead-letter topic ready") {
		t.Errorf("logs for an existing topic = %q, want it ready", out)
	}
}

// readTopic reads n records of a topic from the start.
func readTopic(t testing.TB, brokers []string, name string, n int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(name), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out []*kgo.Record
	for len(out) < n {
		f := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d records of %s, want %d", len(out), name, n)
		}
		out = append(out, f.Records()...)
	}
	return out
}

// heatmapSnap is the part of /api/heatmap the tests compare.
type heatmapSnap struct {
	Source string `json:"source"`
	Note   string `json:"note"`
	Cells  []struct {
		Lat   float64 `json:"lat"`
		Lon   float64 `json:"lon"`
		Count int64   `json:"count"`
	} `json:"cells"`
	Countries []struct {
		ISO       string           `json:"iso"`
		Name      string           `json:"name"`
		Count     int64            `json:"count"`
		Decisions map[string]int64 `json:"decisions"`
	} `json:"countries"`
	Totals map[string]int64 `json:"totals"`
}

func getHeatmap(t testing.TB, base string) heatmapSnap {
	t.Helper()
	code, body := get(t, base+"api/heatmap")
	var s heatmapSnap
	if err := json.Unmarshal([]byte(body), &s); err != nil || code != 200 {
		t.Fatalf("/api/heatmap = %d %s (%v)", code, body, err)
	}
	return s
}

// TestHeatmapFromOpenSearch: with OpenSearch, /api/heatmap is computed by
// the stand-in's aggregations over the indexed documents, and agrees with
// the ingest's own in-memory view; when _search fails, the page data falls
// back to the in-memory view and says so.
func TestHeatmapFromOpenSearch(t *testing.T) {
	k := newKafka(t, 2)
	srv := opensearchtest.NewServer()
	defer srv.Close()
	const n = 400
	k.produceEvents(t, 0, n, time.Now())
	cfg, err := parseConfig([]string{"--kafka-brokers", strings.Join(k.brokers, ","), "--opensearch-url", srv.URL,
		"--admin", "127.0.0.1:0", "--ui", "127.0.0.1:0", "--flush-interval", "20ms"}, func(string) (string, bool) { return "", false }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var logs syncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, io.Discard, &logs) }()
	defer func() { cancel(); <-done }()
	waitFor(t, "every event indexed and committed", 60*time.Second, func() bool { return srv.Count("conn-events-*") == n && k.lagZero(t) })
	m := uiRE.FindStringSubmatch(logs.String())
	if m == nil {
		t.Fatalf("no heat-map address in the logs:\n%s", logs.String())
	}

	viaOS := getHeatmap(t, m[1])
	if srv.Searches() == 0 {
		t.Fatal("the page data did not query OpenSearch")
	}
	if viaOS.Source != "opensearch" || viaOS.Note != "" {
		t.Fatalf("/api/heatmap source = %q note %q, want opensearch", viaOS.Source, viaOS.Note)
	}
	// SampleEvent cycles through four countries and cities.
	if viaOS.Totals["events"] != n || viaOS.Totals["located"] != n || viaOS.Totals["unplaced"] != 0 || viaOS.Totals["served"]+viaOS.Totals["redirected"] != n {
		t.Errorf("totals = %v, want %d events, all located and closed", viaOS.Totals, n)
	}
	if len(viaOS.Cells) != 4 {
		t.Errorf("cells = %+v, want the 4 cities", viaOS.Cells)
	}
	var cellSum int64
	for _, c := range viaOS.Cells {
		cellSum += c.Count
	}
	if cellSum != n {
		t.Errorf("cells hold %d events, want %d", cellSum, n)
	}
	want := map[string]string{"DE": "serve", "FR": "serve", "US": "redirect", "BR": "deny"}
	if len(viaOS.Countries) != len(want) {
		t.Errorf("countries = %+v, want %v", viaOS.Countries, want)
	}
	for _, c := range viaOS.Countries {
		if d, ok := want[c.ISO]; !ok || c.Count != n/4 || c.Decisions[d] != n/4 || c.Name == "" {
			t.Errorf("country %+v, want %d events decided %s with a name", c, n/4, want[c.ISO])
		}
	}

	// The fallback: _search fails, the in-memory view answers, and agrees.
	srv.FailSearches(1)
	mem := getHeatmap(t, m[1])
	if mem.Source != "memory" || !strings.Contains(mem.Note, "unavailable") {
		t.Fatalf("/api/heatmap with _search failing: source %q note %q, want memory with a note", mem.Source, mem.Note)
	}
	for _, key := range []string{"events", "served", "redirected", "denied", "refused", "located", "unplaced"} {
		if mem.Totals[key] != viaOS.Totals[key] {
			t.Errorf("totals[%s]: memory %d, opensearch %d", key, mem.Totals[key], viaOS.Totals[key])
		}
	}
	if fmt.Sprint(mem.Countries) != fmt.Sprint(viaOS.Countries) {
		t.Errorf("countries: memory %+v, opensearch %+v", mem.Countries, viaOS.Countries)
	}
	if again := getHeatmap(t, m[1]); again.Source != "opensearch" {
		t.Errorf("after the failure, source = %q, want opensearch again", again.Source)
	}
	if u := srv.Unhandled(); len(u) > 0 {
		t.Errorf("requests the stand-in does not implement: %v", u)
	}
}

// TestBadSecurityExitsTwo runs the binary with inconsistent Kafka security
// flags: it exits 2 with the reason, before listening on anything.
func TestBadSecurityExitsTwo(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary: skipped with -short")
	}
	bin := filepath.Join(t.TempDir(), "ingest")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"iam_without_tls", []string{"--kafka-sasl", "aws-msk-iam"}, "needs --kafka-tls"},
		{"scram_without_user", []string{"--kafka-sasl", "scram-sha-512"}, "needs --kafka-username and --kafka-password"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, append([]string{"--kafka-brokers", "127.0.0.1:9", "--admin", "127.0.0.1:0", "--ui", ""}, tt.args...)...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 2 {
				t.Fatalf("ingest %q = %v, want exit status 2; stderr:\n%s", tt.args, err, stderr.String())
			}
			if !strings.Contains(stderr.String(), tt.want) {
				t.Errorf("stderr = %q, want it to contain %q", stderr.String(), tt.want)
			}
			if strings.Contains(stderr.String(), "listening") {
				t.Errorf("stderr = %q: something listened before the flags were rejected", stderr.String())
			}
		})
	}
}

// TestSetupMapsBackendRole runs "ingest setup --map-backend-role" against a
// cluster whose originlens_ingest mapping already names another backend
// role: the ingest's ARN is added, the other kept, and all_access is never
// touched; the flag outside setup is a usage error.
func TestSetupMapsBackendRole(t *testing.T) {
	srv := opensearchtest.NewServer()
	defer srv.Close()
	const arn = "arn:aws:iam::123456789012:role/originlens-ingest"
	srv.SetRoleMapping("originlens_ingest", opensearchtest.SecMapping{BackendRoles: []string{"arn:aws:iam::123456789012:role/ops"}})
	srv.SetRoleMapping("all_access", opensearchtest.SecMapping{Users: []string{"admin"}})
	noEnv := func(string) (string, bool) { return "", false }
	cfg, err := parseConfig([]string{"setup", "--opensearch-url", srv.URL, "--map-backend-role", arn}, noEnv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := run(t.Context(), cfg, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "role originlens_ingest (conn-events-*): ok; backend roles mapped: arn:aws:iam::123456789012:role/ops, "+arn) {
		t.Errorf("setup output:\n%s", out.String())
	}
	if m, _ := srv.RoleMapping("originlens_ingest"); len(m.BackendRoles) != 2 || m.BackendRoles[1] != arn {
		t.Errorf("mapping %+v", m)
	}
	if m, _ := srv.RoleMapping("all_access"); len(m.BackendRoles) != 0 {
		t.Errorf("all_access mapping changed: %+v", m)
	}
	if _, err := parseConfig([]string{"--kafka-brokers", "127.0.0.1:9092", "--map-backend-role", arn}, noEnv, io.Discard); err == nil || !strings.Contains(err.Error(), "--map-backend-role") {
		t.Errorf("--map-backend-role outside setup: %v, want an error naming the flag", err)
	}
}
