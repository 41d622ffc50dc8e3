package main

import "github.com/originlens/originlens/internal/flagenv"

// Every setting of nc-probe, per-run ones (--count, --expect-ip...)
// included, reads NC_PROBE_<NAME>: it runs from scripts, SSM documents and
// CI jobs that set a probe's settings once per job, the prefix is its own
// (no other program sets NC_PROBE_*), and one rule for all four programs
// is easier to learn than a list of exceptions. --version and --help read
// the command line only, short aliases have no variable of their own, and
// the target, a positional argument, reads NC_PROBE_TARGET.

// probeCommand is "nc-probe [flags] HOST:PORT".
var probeCommand = &flagenv.Command{
	Usage: "nc-probe [flags] HOST:PORT\nnc-probe listen [flags] [ADDR]",
	Intro: `Connects to HOST:PORT, sends a probe line, reads the server's report of the
client address it saw, and compares it with the address expected.
Every verdict comes with a diagnosis code and one sentence on stderr naming
the likely cause and the setting to check: preserved, source-nat,
proxy-header-ignored, proxy-header-refused, proxy-header-expected,
no-report, unreachable, timeout (cannot-tell behind NAT).
Exit: 0 preserved, 1 not preserved (the server saw another address:
source-nat, proxy-header-ignored), 2 no report (proxy-header-refused,
proxy-header-expected, no-report, unreachable, timeout) or bad flags,
3 cannot tell (the probe is behind NAT: pass --expect-ip). With --family
both, 0 only when every family is preserved.

Every setting also reads the environment variable shown beside it
(NC_PROBE_<NAME>, dashes as underscores; the target NC_PROBE_TARGET); the
command line wins. --version, --help and the short aliases read the
command line only. See nc-probe listen --help for the other end.`,
	Prefix:  envPrefix,
	CmdOnly: []string{"version"},
	// "u": nc-probe --udp/-u is being added beside this change.
	Short: map[string]string{"n": "count", "c": "concurrency", "i": "interval", "u": "udp"},
	Examples: map[string]string{
		"expect-ip": "203.0.113.7",
		"compare":   "app.example.com:8080",
		"proxy":     "v2",
		"proxy-src": "203.0.113.7:40000",
		"proxy-dst": "198.51.100.1:80",
		"bind":      "192.0.2.10",
		"family":    "both",
		"echo":      "3",
	},
	Groups: []flagenv.Group{
		{Title: "Target and addresses", Flags: []string{"expect-ip", "compare", "family", "bind", "udp*"}},
		{Title: "Attempts", Flags: []string{"count", "concurrency", "interval", "timeout", "echo", "line"}},
		{Title: "PROXY protocol", Flags: []string{"proxy", "proxy-*"}},
		{Title: "Output", Flags: []string{"json", "format", "watch", "version"}},
	},
}

// listenCommand is "nc-probe listen [flags] [ADDR]".
var listenCommand = &flagenv.Command{
	Usage: "nc-probe listen [flags] [ADDR]   (default ADDR :80)",
	Intro: `Prints the source address (and PROXY header) of every connection, answers
the first line with a report line in the app's format, then echoes lines.
A connection refused for its PROXY header gets one line error=<why>, as
from the app (see docs/protocol.md).

Every setting also reads the environment variable shown beside it
(NC_PROBE_<NAME>, dashes as underscores); the command line wins.`,
	Prefix:   envPrefix,
	Examples: map[string]string{"trusted-proxies": "10.0.0.0/8"},
	Groups: []flagenv.Group{
		{Title: "Listening", Flags: []string{"udp*"}},
		{Title: "PROXY protocol", Flags: []string{"proxy-*", "trusted-proxies"}},
		{Title: "Connections", Flags: []string{"idle-timeout"}},
	},
}
