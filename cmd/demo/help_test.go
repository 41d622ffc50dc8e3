package main

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"strings"
	"testing"

	"github.com/originlens/originlens/internal/flagenv/flagenvtest"
)

var demoTopics = []string{"Programs and files", "Kafka and OpenSearch", "Traffic", "Heat map and run"}

// Ensure --help lists every flag as --name under a topic with DEMO_<NAME>
// beside it (and the documented unprefixed name for the four shared with
// deploy/compose); it printed Go's "Usage of demo:" and called --count a
// string.
func TestHelpGroups(t *testing.T) {
	var help bytes.Buffer
	if _, err := parseFlags([]string{"--help"}, func(string) string { return "" }, &help); !errors.Is(err, flag.ErrHelp) {
		t.Fatal(err)
	}
	got := flagenvtest.Check(t, help.String(), command, demoTopics)
	flagenvtest.CheckEntries(t, got,
		flagenvtest.Want{Flag: "bin", Group: "Programs and files", Type: "string", Env: "DEMO_BIN"},
		flagenvtest.Want{Flag: "geoip-db", Group: "Programs and files", Type: "string", Env: "DEMO_GEOIP_DB,GEOIP_DB"},
		flagenvtest.Want{Flag: "opensearch-url", Group: "Kafka and OpenSearch", Type: "string", Env: "DEMO_OPENSEARCH_URL,OPENSEARCH_URL"},
		flagenvtest.Want{Flag: "count", Group: "Traffic", Type: "int", Env: "DEMO_COUNT"},
		flagenvtest.Want{Flag: "spoofs", Group: "Traffic", Type: "int", Env: "DEMO_SPOOFS"},
		flagenvtest.Want{Flag: "wait", Group: "Traffic", Type: "duration", Env: "DEMO_WAIT"},
		flagenvtest.Want{Flag: "keep", Group: "Heat map and run", Env: "DEMO_KEEP"},
		flagenvtest.Want{Flag: "version", Group: "Heat map and run"},
	)
	if strings.Contains(help.String(), "Usage of demo") {
		t.Errorf("help still Go's default:\n%s", help.String())
	}
}

// Ensure the environment fills what the command line left, DEMO_ before
// the unprefixed name, and the command line wins.
func TestFlagsFromEnvironment(t *testing.T) {
	env := map[string]string{"DEMO_KAFKA_BROKERS": "a:1", "KAFKA_BROKERS": "b:1", "OPENSEARCH_URL": "http://o:9200", "DEMO_WAIT": "5s", "DEMO_COUNT": "7", "DEMO_KEEP": "1"}
	cfg, err := parseFlags([]string{"--count", "9"}, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.KafkaBrokers != "a:1" || cfg.OpenSearchURL != "http://o:9200" || cfg.Wait.String() != "5s" || cfg.Count != 9 || !cfg.Keep {
		t.Errorf("cfg %+v", cfg)
	}
}

// Ensure every bad value, from the command line or the environment, is one
// line naming the flag, the value and an example of a good one.
func TestBadValuesOneLine(t *testing.T) {
	for _, tt := range []struct {
		args        []string
		env         map[string]string
		flag, value string
	}{
		{[]string{"--count", "x"}, nil, "count", "x"},
		{[]string{"--count", "0"}, nil, "count", "0"},
		{[]string{"--spoofs", "-1"}, nil, "spoofs", "-1"},
		{[]string{"--concurrency", "1000"}, nil, "concurrency", "1000"},
		{[]string{"--wait", "60"}, nil, "wait", "60"},
		{[]string{"--wait", "-1s"}, nil, "wait", "-1s"},
		{[]string{"--dashboards-url", "http://127.0.0.1:5601"}, nil, "opensearch-url", "http://127.0.0.1:5601"},
		{[]string{"--count"}, nil, "count", "count"},
		{nil, map[string]string{"DEMO_SPOOFS": "many"}, "spoofs", "DEMO_SPOOFS=many"},
		{nil, map[string]string{"DEMO_KEEP": "yes please"}, "keep", `DEMO_KEEP="yes please"`},
	} {
		var out bytes.Buffer
		_, err := parseFlags(tt.args, func(k string) string { return tt.env[k] }, &out)
		flagenvtest.CheckError(t, err, tt.flag, tt.value)
		if out.Len() != 0 {
			t.Errorf("%q: printed %q; want only the error", tt.args, out.String())
		}
	}
}

// Ensure the built binary prints the grouped help on stdout and exits 0,
// and exits 2 with one line on stderr for a bad value.
func TestBinaryHelpAndBadValue(t *testing.T) {
	flagenvtest.CheckBinary(t, flagenvtest.Build(t), command, demoTopics, []string{"DEMO_COUNT=ten"}, nil,
		"demo: DEMO_COUNT=ten (--count): want a whole number, e.g. 10\n")
}
