package main

import (
	"bytes"
	"errors"
	"flag"
	"strings"
	"testing"

	"github.com/originlens/originlens/internal/flagenv/flagenvtest"
)

// Ensure --help, of nc-probe and of nc-probe listen, lists every flag as
// --name under a topic, the short aliases beside their flags, and
// NC_PROBE_<NAME> beside every flag but --version.
func TestHelpGroups(t *testing.T) {
	var help bytes.Buffer
	if _, err := parseArgs([]string{"--help"}, noEnv, &help); !errors.Is(err, flag.ErrHelp) {
		t.Fatal(err)
	}
	got := flagenvtest.Check(t, help.String(), probeCommand, []string{"Target and addresses", "Attempts", "PROXY protocol", "Output"})
	flagenvtest.CheckEntries(t, got,
		flagenvtest.Want{Flag: "expect-ip", Group: "Target and addresses", Type: "IP", Env: "NC_PROBE_EXPECT_IP"},
		flagenvtest.Want{Flag: "udp", Group: "Target and addresses", Short: "u", Env: "NC_PROBE_UDP"},
		flagenvtest.Want{Flag: "count", Group: "Attempts", Type: "int", Short: "n", Env: "NC_PROBE_COUNT"},
		flagenvtest.Want{Flag: "concurrency", Group: "Attempts", Type: "int", Short: "c", Env: "NC_PROBE_CONCURRENCY"},
		flagenvtest.Want{Flag: "interval", Group: "Attempts", Type: "duration", Short: "i", Env: "NC_PROBE_INTERVAL"},
		flagenvtest.Want{Flag: "proxy-src", Group: "PROXY protocol", Type: "IP:PORT[,IP:PORT...]", Env: "NC_PROBE_PROXY_SRC"},
		flagenvtest.Want{Flag: "format", Group: "Output", Type: "string", Env: "NC_PROBE_FORMAT"},
		flagenvtest.Want{Flag: "version", Group: "Output"},
	)
	for _, alias := range []string{"n", "c", "i"} {
		if _, ok := got[alias]; ok {
			t.Errorf("-%s listed as a flag of its own", alias)
		}
	}

	help.Reset()
	if _, err := parseArgs([]string{"listen", "-h"}, noEnv, &help); !errors.Is(err, flag.ErrHelp) {
		t.Fatal(err)
	}
	got = flagenvtest.Check(t, help.String(), listenCommand, []string{"PROXY protocol", "Connections"})
	if e := got["trusted-proxies"]; e.Group != "PROXY protocol" || strings.Join(e.Env, ",") != "NC_PROBE_TRUSTED_PROXIES" {
		t.Errorf("listen --trusted-proxies: %+v", e)
	}
}

// Ensure every bad value, of nc-probe and nc-probe listen, from the command
// line or the environment, is one line naming the flag, the value and an
// example of a good one.
func TestBadValuesOneLine(t *testing.T) {
	for _, tt := range []struct {
		args        []string
		env         map[string]string
		flag, value string
	}{
		{[]string{"-n", "x", "h:1"}, nil, "count", "x"},
		{[]string{"h:1", "-c", "0"}, nil, "concurrency", "0"},
		{[]string{"--interval", "5", "h:1"}, nil, "interval", "5"},
		{[]string{"--timeout", "0s", "h:1"}, nil, "timeout", "0s"},
		{[]string{"--expect-ip", "1.2.3", "h:1"}, nil, "expect-ip", "1.2.3"},
		{[]string{"--bind", "eth0", "h:1"}, nil, "bind", "eth0"},
		{[]string{"--proxy", "v3", "--proxy-src", "1.2.3.4:5", "h:1"}, nil, "proxy", "v3"},
		{[]string{"--proxy", "v2", "--proxy-src", "1.2.3.4", "h:1"}, nil, "proxy-src", "1.2.3.4"},
		{[]string{"--proxy", "v2", "h:1"}, nil, "proxy-src", "v2"},
		{[]string{"--family", "5", "h:1"}, nil, "family", "5"},
		{[]string{"--format", "xml", "h:1"}, nil, "format", "xml"},
		{[]string{"--compare", "nohostport", "h:1"}, nil, "compare", "nohostport"},
		{[]string{"h:1", "--timeout"}, nil, "timeout", "timeout"},
		{[]string{"h:1"}, map[string]string{"NC_PROBE_INTERVAL": "1"}, "interval", "NC_PROBE_INTERVAL=1"},
		{[]string{"listen", "--proxy-protocol", "maybe", ":1"}, nil, "proxy-protocol", "maybe"},
		{[]string{"listen", "--proxy-protocol", "trusted", ":1"}, nil, "trusted-proxies", "trusted"},
		{[]string{"listen", "--proxy-protocol", "trusted", "--trusted-proxies", "10/8", ":1"}, nil, "trusted-proxies", "10/8"},
		{[]string{"listen", ":1"}, map[string]string{"NC_PROBE_IDLE_TIMEOUT": "0s"}, "idle-timeout", "0s"},
	} {
		var out bytes.Buffer
		_, err := parseArgs(tt.args, func(k string) string { return tt.env[k] }, &out)
		flagenvtest.CheckError(t, err, tt.flag, tt.value)
		if out.Len() != 0 {
			t.Errorf("%q: printed %q; want only the error", tt.args, out.String())
		}
	}
}

// Ensure the built binary prints the grouped help on stdout and exits 0,
// and exits 2 with one line on stderr for a bad value.
func TestBinaryHelpAndBadValue(t *testing.T) {
	flagenvtest.CheckBinary(t, flagenvtest.Build(t), probeCommand, []string{"Target and addresses", "Attempts", "PROXY protocol", "Output"}, nil,
		[]string{"-c", "0", "127.0.0.1:9"}, "nc-probe: --concurrency 0: must be at least 1 (e.g. --concurrency 1)\n")
}
