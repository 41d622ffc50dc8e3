package main

import (
	"bytes"
	"errors"
	"io"
	"os/exec"
	"strings"
	"testing"

	"github.com/originlens/originlens/internal/flagenv/flagenvtest"
)

var ingestTopics = []string{"Kafka", "OpenSearch", "Indices, template and dashboards", "Bulk indexing", "Admin, heat map and logs"}

// Ensure --help, of ingest and of ingest setup, lists every flag as
// --name (it was Go's -name) under a topic, with INGEST_<NAME> beside
// every flag but --version (it showed no variable).
func TestHelpGroups(t *testing.T) {
	for _, tt := range []struct {
		args  []string
		usage string
	}{
		{[]string{"--help"}, "Usage: ingest [flags]\n       ingest setup [flags]\n"},
		{[]string{"-h"}, "Usage: ingest [flags]\n"},
		{[]string{"setup", "--help"}, "Usage: ingest setup [flags]\n\nInstalls"},
	} {
		var help bytes.Buffer
		if _, err := parseConfig(tt.args, noEnv, &help); !errors.Is(err, errExit) {
			t.Fatalf("%q: %v", tt.args, err)
		}
		if !strings.HasPrefix(help.String(), tt.usage) {
			t.Errorf("%q: help starts %q; want %q", tt.args, help.String()[:min(80, help.Len())], tt.usage)
		}
		cmd := command
		if tt.args[0] == "setup" {
			cmd = setupCommand
		}
		got := flagenvtest.Check(t, help.String(), cmd, ingestTopics)
		flagenvtest.CheckEntries(t, got,
			flagenvtest.Want{Flag: "kafka-brokers", Group: "Kafka", Type: "string", Env: "INGEST_KAFKA_BROKERS"},
			flagenvtest.Want{Flag: "dlq-topic", Group: "Kafka", Type: "string", Env: "INGEST_DLQ_TOPIC"},
			flagenvtest.Want{Flag: "opensearch-url", Group: "OpenSearch", Type: "string", Env: "INGEST_OPENSEARCH_URL"},
			flagenvtest.Want{Flag: "aws-sigv4-service", Group: "OpenSearch", Type: "string", Env: "INGEST_AWS_SIGV4_SERVICE"},
			flagenvtest.Want{Flag: "retention", Group: "Indices, template and dashboards", Type: "string", Env: "INGEST_RETENTION"},
			flagenvtest.Want{Flag: "bulk-bytes", Group: "Bulk indexing", Type: "size", Env: "INGEST_BULK_BYTES"},
			flagenvtest.Want{Flag: "max-inflight-bytes", Group: "Bulk indexing", Type: "size", Env: "INGEST_MAX_INFLIGHT_BYTES"},
			flagenvtest.Want{Flag: "flush-interval", Group: "Bulk indexing", Type: "duration", Env: "INGEST_FLUSH_INTERVAL"},
			flagenvtest.Want{Flag: "ui", Group: "Admin, heat map and logs", Type: "string", Env: "INGEST_UI"},
			flagenvtest.Want{Flag: "version", Group: "Admin, heat map and logs"},
		)
		if len(got) < 31 {
			t.Errorf("%q lists %d flags; want at least 31", tt.args, len(got))
		}
	}
}

// Ensure every bad value, of ingest and of ingest setup, from the command
// line or the environment, is one line naming the flag, the value and an
// example of a good one, with nothing printed (it printed the whole
// 79-line usage first).
func TestBadValuesOneLine(t *testing.T) {
	brokers := []string{"--kafka-brokers", "127.0.0.1:9092"}
	for _, tt := range []struct {
		args        []string
		env         map[string]string
		flag, value string
	}{
		{append(brokers, "--flush-interval", "5"), nil, "flush-interval", "5"},
		{append(brokers, "--bulk-docs", "0"), nil, "bulk-docs", "0"},
		{append(brokers, "--bulk-workers", "99"), nil, "bulk-workers", "99"},
		{append(brokers, "--bulk-bytes", "lots"), nil, "bulk-bytes", "lots"},
		{append(brokers, "--bulk-bytes", "200MiB"), nil, "bulk-bytes", "200MiB"},
		{append(brokers, "--bulk-bytes", "10MiB", "--max-inflight-bytes", "1MiB"), nil, "max-inflight-bytes", "1MiB"},
		{append(brokers, "--retention", "forever"), nil, "retention", "forever"},
		{append(brokers, "--opensearch-url", "localhost:9200"), nil, "opensearch-url", "localhost:9200"},
		{append(brokers, "--index-prefix", "Conn"), nil, "index-prefix", "Conn"},
		{append(brokers, "--log-level", "chatty"), nil, "log-level", "chatty"},
		{append(brokers, "--admin", "localhost:1"), nil, "admin", "localhost:1"},
		{append(brokers, "--kafka-session-timeout", "10ms"), nil, "kafka-session-timeout", "10ms"},
		{append(brokers, "--dlq-topic", "conn-events"), nil, "dlq-topic", "conn-events"},
		{append(brokers, "--bulk-docs"), nil, "bulk-docs", "bulk-docs"},
		{nil, nil, "kafka-brokers", "kafka-brokers"},
		{[]string{"setup"}, nil, "opensearch-url", "opensearch-url"},
		{[]string{"setup", "--opensearch-url", "http://o:9200", "--retention", "1w"}, nil, "retention", "1w"},
		{brokers, map[string]string{"INGEST_BULK_WORKERS": "many"}, "bulk-workers", "INGEST_BULK_WORKERS=many"},
		{brokers, map[string]string{"INGEST_SHUTDOWN_GRACE": "10"}, "shutdown-grace", "INGEST_SHUTDOWN_GRACE=10"},
	} {
		var out bytes.Buffer
		_, err := parseConfig(tt.args, func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok }, &out)
		flagenvtest.CheckError(t, err, tt.flag, tt.value)
		if out.Len() != 0 {
			t.Errorf("%q: printed %q; want only the error", tt.args, out.String())
		}
	}
	if _, err := parseConfig([]string{"--nosuch"}, noEnv, io.Discard); err == nil || err.Error() != "unknown flag --nosuch (see --help for the flags)" {
		t.Errorf("--nosuch: %v", err)
	}
}

// Ensure the built binary prints the grouped help on stdout and exits 0,
// for ingest and ingest setup, and exits 2 with one line for a bad value.
func TestBinaryHelpAndBadValue(t *testing.T) {
	bin := ingestBinary(t)
	flagenvtest.CheckBinary(t, bin, command, ingestTopics, nil, []string{"setup", "--opensearch-url", "http://127.0.0.1:9", "--bulk-workers", "99"},
		"ingest: --bulk-workers 99: want 1 to 64, e.g. 2\n")
	stdout, err := exec.Command(bin, "setup", "--help").Output()
	if err != nil {
		t.Fatal(err)
	}
	flagenvtest.Check(t, string(stdout), setupCommand, ingestTopics)
}
