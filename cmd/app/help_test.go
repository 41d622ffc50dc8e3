package main

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/originlens/originlens/internal/flagenv/flagenvtest"
)

var appTopics = []string{"Listening", "UDP", "PROXY protocol", "Relay", "GeoIP and rules", "Limits and timeouts", "Kafka", "Spool", "Admin and logs"}

// Ensure --help lists every flag as --name under a topic, in the topics'
// order, with APP_<NAME> beside every flag but --version: a flag added to
// parseConfig that no topic of help.go takes fails here.
func TestHelpGroups(t *testing.T) {
	var help bytes.Buffer
	if _, err := parseConfig([]string{"--help"}, env(nil), &help); !errors.Is(err, errExit) {
		t.Fatal(err)
	}
	got := flagenvtest.Check(t, help.String(), command, appTopics)
	flagenvtest.CheckEntries(t, got,
		flagenvtest.Want{Flag: "listen", Group: "Listening", Type: "string", Env: "APP_LISTEN"},
		flagenvtest.Want{Flag: "listen-udp", Group: "Listening", Type: "string", Env: "APP_LISTEN_UDP"},
		flagenvtest.Want{Flag: "udp-idle-timeout", Group: "UDP", Type: "duration", Env: "APP_UDP_IDLE_TIMEOUT"},
		flagenvtest.Want{Flag: "udp-max-flows-per-ip", Group: "UDP", Type: "int", Env: "APP_UDP_MAX_FLOWS_PER_IP"},
		flagenvtest.Want{Flag: "trusted-proxies", Group: "PROXY protocol", Type: "string", Env: "APP_TRUSTED_PROXIES"},
		flagenvtest.Want{Flag: "upstream-mode", Group: "Relay", Type: "string", Env: "APP_UPSTREAM_MODE"},
		flagenvtest.Want{Flag: "geoip-db", Group: "GeoIP and rules", Type: "string", Env: "APP_GEOIP_DB"},
		flagenvtest.Want{Flag: "policy", Group: "GeoIP and rules", Type: "string", Env: "APP_POLICY"},
		flagenvtest.Want{Flag: "max-conns-per-ip", Group: "Limits and timeouts", Type: "int", Env: "APP_MAX_CONNS_PER_IP"},
		flagenvtest.Want{Flag: "kafka-compression", Group: "Kafka", Type: "string", Env: "APP_KAFKA_COMPRESSION"},
		flagenvtest.Want{Flag: "kafka-buffer", Group: "Kafka", Type: "string", Env: "APP_KAFKA_BUFFER"},
		flagenvtest.Want{Flag: "kafka-tls", Group: "Kafka", Env: "APP_KAFKA_TLS"},
		flagenvtest.Want{Flag: "spool-dir", Group: "Spool", Type: "string", Env: "APP_SPOOL_DIR"},
		flagenvtest.Want{Flag: "admin", Group: "Admin and logs", Type: "string", Env: "APP_ADMIN"},
		flagenvtest.Want{Flag: "version", Group: "Admin and logs"},
	)
	if len(got) < 38 {
		t.Errorf("--help lists %d flags; want at least 38", len(got))
	}
}

// appBadValues are bad values from the command line and the environment,
// with the flag and value their one-line error must name.
var appBadValues = []struct {
	args        []string
	env         map[string]string
	flag, value string
}{
	{[]string{"--idle-timeout", "5"}, nil, "idle-timeout", "5"},
	{[]string{"--max-conns", "0"}, nil, "max-conns", "0"},
	{[]string{"--max-line", "ten"}, nil, "max-line", "ten"},
	{[]string{"--listen", "80"}, nil, "listen", "80"},
	{[]string{"--proxy-protocol", "sometimes"}, nil, "proxy-protocol", "sometimes"},
	{[]string{"--proxy-protocol", "trusted"}, nil, "trusted-proxies", "trusted"},
	{[]string{"--proxy-protocol", "trusted", "--trusted-proxies", "10.0.0.0/33"}, nil, "trusted-proxies", "10.0.0.0/33"},
	{[]string{"--kafka-compression", "gzip"}, nil, "kafka-compression", "gzip"},
	{[]string{"--kafka-brokers", "kafka"}, nil, "kafka-brokers", "kafka"},
	{[]string{"--conn-rate-per-ip", "-1"}, nil, "conn-rate-per-ip", "-1"},
	{[]string{"--log-level", "chatty"}, nil, "log-level", "chatty"},
	{[]string{"--queue-size"}, nil, "queue-size", "queue-size"},
	{nil, map[string]string{"APP_SPOOL_MAX_BYTES": "1G"}, "spool-max-bytes", "APP_SPOOL_MAX_BYTES=1G"},
	{nil, map[string]string{"APP_KAFKA_BATCH_SIZE": "0"}, "kafka-batch-size", "0"},
	{[]string{"--udp-max-flows-per-ip", "0"}, nil, "udp-max-flows-per-ip", "0"},
	{nil, map[string]string{"APP_UDP_MAX_FLOWS_PER_IP": "many"}, "udp-max-flows-per-ip", "APP_UDP_MAX_FLOWS_PER_IP=many"},
}

// Ensure every bad value is one line naming the flag, the value and an
// example of a good one.
func TestBadValuesOneLine(t *testing.T) {
	for _, tt := range appBadValues {
		var out bytes.Buffer
		_, err := parseConfig(tt.args, env(tt.env), &out)
		flagenvtest.CheckError(t, err, tt.flag, tt.value)
		if out.Len() != 0 {
			t.Errorf("%q: printed %q; want only the error", tt.args, out.String())
		}
	}
	if _, err := parseConfig([]string{"--nosuch"}, env(nil), io.Discard); err == nil || err.Error() != "unknown flag --nosuch (see --help for the flags)" {
		t.Errorf("--nosuch: %v", err)
	}
}

// Ensure the built binary prints the grouped help on stdout and exits 0,
// and exits 2 with one line on stderr for a bad value.
func TestBinaryHelpAndBadValue(t *testing.T) {
	flagenvtest.CheckBinary(t, appBinary(t), command, appTopics, nil, []string{"--listen", "127.0.0.1:0", "--kafka-compression", "gzip"},
		"app: --kafka-compression gzip: must be one of zstd, lz4, none, got \"gzip\" (e.g. --kafka-compression lz4)\n")
	flagenvtest.CheckBinary(t, appBinary(t), command, appTopics, []string{"APP_LISTEN=127.0.0.1:0", "APP_IDLE_TIMEOUT=5"}, nil,
		"app: APP_IDLE_TIMEOUT=5 (--idle-timeout): a duration needs a unit, e.g. 5s or 1m\n")
}
