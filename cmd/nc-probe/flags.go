package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/originlens/originlens/internal/flagenv"
	"github.com/originlens/originlens/internal/origin"
	"github.com/originlens/originlens/internal/probe"
)

// Exit codes.
const (
	exitPreserved    = 0 // the server saw the expected client address
	exitNotPreserved = 1 // the server saw another address
	exitFailure      = 2 // connection or protocol failure, bad flags
	exitUnknown      = 3 // behind NAT without --expect-ip: cannot tell
)

const envPrefix = "NC_PROBE_"

// config is the parsed command line.
type config struct {
	listen bool
	probe  probe.Config
	json   bool
	csv    bool // --format csv: one row per attempt
	watch  bool // --watch: one line per attempt, then a summary
	udp    bool // --udp, -u: probe the app's UDP listener (see udp.go)

	listenAddr string
	origin     origin.Config
	idle       time.Duration
}

// parseArgs parses args (without the program name), with getenv as the
// fallback for flags not given. -h prints the usage to help and returns
// flag.ErrHelp.
func parseArgs(args []string, getenv func(string) string, help io.Writer) (config, error) {
	if len(args) > 0 && args[0] == "listen" {
		return parseListen(args[1:], getenv, help)
	}
	var cfg config
	fs := flag.NewFlagSet("nc-probe", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var (
		expectIP, compare, proxyVer, proxySrc, proxyDst, bind, line string
		count, conc, echo                                           int
		interval, timeout                                           time.Duration
	)
	fs.StringVar(&expectIP, "expect-ip", "", "the client `IP` the server should see (default: the probe's local address, or --proxy-src)")
	fs.IntVar(&count, "count", 1, "attempts per target; 0 runs until Ctrl-C (alias -n; default 0 with --watch)")
	fs.IntVar(&count, "n", 1, "alias of --count")
	fs.IntVar(&conc, "concurrency", 1, "attempts started together and in flight at once, per target (alias -c)")
	fs.IntVar(&conc, "c", 1, "alias of --concurrency")
	fs.DurationVar(&interval, "interval", 100*time.Millisecond, "time between the starts of batches of -c attempts per target; 0: back to back, TCP only (alias -i; default 1s with --watch)")
	fs.DurationVar(&interval, "i", 100*time.Millisecond, "alias of --interval")
	fs.DurationVar(&timeout, "timeout", probe.DefaultTimeout, "bound on each attempt, dial to last echo")
	fs.IntVar(&echo, "echo", 0, "echo lines to time after the greeting (decision serve only)")
	fs.BoolVar(&cfg.json, "json", false, "print one JSON object instead of text")
	fs.StringVar(&compare, "compare", "", "second `HOST:PORT` probed interleaved, shown side by side")
	fs.StringVar(&proxyVer, "proxy", "", "send a PROXY protocol header first: v1 or v2")
	fs.StringVar(&proxySrc, "proxy-src", "", "the client `IP:PORT[,IP:PORT...]` the PROXY header claims; several: attempt k claims the k-th, in turn")
	fs.StringVar(&proxyDst, "proxy-dst", "", "the destination `IP:PORT` in the PROXY header (default: the target's address)")
	fs.StringVar(&bind, "bind", "", "local `IP` to dial from")
	fs.StringVar(&line, "line", probe.DefaultLine, "the probe line sent first")
	fs.BoolVar(&cfg.udp, "udp", false, "probe over UDP: -n datagrams per sender at -i, -c senders; loss, RTT, jitter, reordering (alias -u)")
	fs.BoolVar(&cfg.udp, "u", false, "alias of --udp")
	// Issue 18: diagnosis per family, watch, CSV.
	var family, format string
	fs.StringVar(&family, "family", "", "address family to probe: 4, 6 or both (one verdict per family); default: what the name resolves to, first that answers")
	fs.BoolVar(&cfg.watch, "watch", false, "one line per attempt until Ctrl-C or -n, then a summary with the longest run of failures")
	fs.StringVar(&format, "format", "text", "output: text, json (same as --json) or csv (one row per attempt: time,family,target,connect_ms,report_ms,server_saw,verdict,diagnosis)")
	showVersion := fs.Bool("version", false, "print the version and exit")

	pos, err := parseInterspersed(probeCommand, fs, args, getenv)
	if errors.Is(err, flag.ErrHelp) {
		probeCommand.Help(help, fs)
		return cfg, err
	}
	if err != nil {
		return cfg, err
	}
	if *showVersion {
		fmt.Fprintln(help, "nc-probe", version)
		return cfg, flag.ErrHelp
	}
	if err := applyFamilyFormat(&cfg, fs, family, format, &count, &interval); err != nil {
		return cfg, err
	}
	if cfg.udp {
		// Not implemented over UDP: refuse rather than print something else
		// than asked.
		switch {
		case cfg.watch:
			return cfg, errors.New("--watch is TCP only: drop it with --udp (use -n and -i, e.g. --udp -n 600 -i 1s)")
		case cfg.csv:
			return cfg, errors.New("--format csv is TCP only: with --udp use --format text or json (e.g. --udp --json)")
		case len(cfg.probe.Families) > 0:
			return cfg, errors.New("--family both is TCP only: with --udp probe one family at a time (e.g. --udp --family 6)")
		case interval <= 0:
			// Back to back is a flood over UDP; it used to become 100ms
			// without a word.
			return cfg, probeCommand.Invalid(fs, "interval", errors.New("with --udp must be positive (datagrams are paced, not sent back to back), e.g. --udp -i 10ms"))
		}
	}
	switch {
	case len(pos) > 1:
		return cfg, fmt.Errorf("one target expected, got %q, e.g. nc-probe app.example.com:80 (flags may come before or after it)", pos)
	case len(pos) == 1:
		cfg.probe.Target = pos[0]
	case getenv(envPrefix+"TARGET") != "":
		cfg.probe.Target = getenv(envPrefix + "TARGET")
	default:
		return cfg, errors.New("missing HOST:PORT, e.g. nc-probe app.example.com:80 (or NC_PROBE_TARGET; see --help)")
	}
	if err := checkHostPort(cfg.probe.Target); err != nil {
		return cfg, err
	}
	if host, _, _ := net.SplitHostPort(cfg.probe.Target); len(cfg.probe.Families) > 0 && net.ParseIP(host) != nil {
		return cfg, fmt.Errorf("--family both needs a host name with A and AAAA records, not the address %s (e.g. --family both app.example.com:80)", host)
	}
	if compare != "" {
		if err := checkHostPort(compare); err != nil {
			return cfg, probeCommand.Invalid(fs, "compare", err)
		}
	}
	cfg.probe.Compare = compare
	cfg.probe.Count, cfg.probe.Concurrency, cfg.probe.Interval = count, conc, interval
	o := &cfg.probe.Options
	o.Timeout, o.Echo, o.Line = timeout, echo, line
	if timeout <= 0 {
		return cfg, probeCommand.Invalid(fs, "timeout", errors.New("must be positive"))
	}
	if conc < 1 {
		return cfg, probeCommand.Invalid(fs, "concurrency", errors.New("must be at least 1"))
	}
	if expectIP != "" {
		a, err := netip.ParseAddr(expectIP)
		if err != nil {
			return cfg, probeCommand.Invalid(fs, "expect-ip", errors.New("want an IPv4 or IPv6 address"))
		}
		cfg.probe.Expect = a.Unmap()
	}
	if bind != "" {
		a, err := netip.ParseAddr(bind)
		if err != nil {
			return cfg, probeCommand.Invalid(fs, "bind", errors.New("want a local IPv4 or IPv6 address"))
		}
		o.Bind = a.Unmap()
	}
	switch proxyVer {
	case "":
		if proxySrc != "" || proxyDst != "" {
			return cfg, errors.New("--proxy-src and --proxy-dst need --proxy v1|v2, e.g. --proxy v2 --proxy-src 203.0.113.7:40000")
		}
	case "v1", "v2", "1", "2":
		p := &probe.ProxyHeader{Version: proxyVer[len(proxyVer)-1] - '0'}
		if proxySrc == "" {
			return cfg, fmt.Errorf("--proxy %s needs --proxy-src IP:PORT, e.g. --proxy-src 203.0.113.7:40000", flagenv.Quote(proxyVer))
		}
		for _, f := range strings.Split(proxySrc, ",") {
			ap, err := parseAddrPort(strings.TrimSpace(f))
			if err != nil {
				return cfg, probeCommand.Invalid(fs, "proxy-src", fmt.Errorf("%q is not IP:PORT", f))
			}
			cfg.probe.ProxySources = append(cfg.probe.ProxySources, ap)
		}
		p.Src = cfg.probe.ProxySources[0]
		if len(cfg.probe.ProxySources) == 1 {
			cfg.probe.ProxySources = nil
		}
		if proxyDst != "" {
			if p.Dst, err = parseAddrPort(proxyDst); err != nil {
				return cfg, probeCommand.Invalid(fs, "proxy-dst", errors.New("want IP:PORT"))
			}
		}
		o.Proxy = p
	default:
		return cfg, fmt.Errorf("--proxy %s: must be v1 or v2 (e.g. --proxy v2)", flagenv.Quote(proxyVer))
	}
	if err := cfg.probe.Validate(); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// applyFamilyFormat applies --family, --watch and --format. A --watch without
// -n runs until Ctrl-C, and without -i probes once a second.
func applyFamilyFormat(cfg *config, fs *flag.FlagSet, family, format string, count *int, interval *time.Duration) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	switch family {
	case "", "any":
	case "4", "6":
		cfg.probe.Options.Family = int(family[0] - '0')
	case "both", "46":
		cfg.probe.Families = []int{4, 6}
		if set["compare"] {
			return errors.New("--family both and --compare exclude each other: compare one family at a time (--family 4 or 6)")
		}
	default:
		return fmt.Errorf("--family must be 4, 6 or both, not %q (e.g. --family both)", family)
	}
	switch format {
	case "text":
	case "json":
		cfg.json = true
	case "csv":
		if cfg.json {
			return errors.New("--json and --format csv exclude each other")
		}
		cfg.csv = true
	default:
		return fmt.Errorf("--format must be text, json or csv, not %q (e.g. --format csv)", format)
	}
	if cfg.watch {
		if !set["count"] && !set["n"] {
			*count = 0
		}
		if !set["interval"] && !set["i"] {
			*interval = time.Second
		}
	}
	return nil
}

func parseListen(args []string, getenv func(string) string, help io.Writer) (config, error) {
	cfg := config{listen: true}
	fs := flag.NewFlagSet("nc-probe listen", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var mode, trusted string
	var hdrTimeout time.Duration
	fs.StringVar(&mode, "proxy-protocol", "off", "PROXY protocol mode, as the app's: off, required or trusted")
	fs.StringVar(&trusted, "trusted-proxies", "", "`CIDR[,CIDR]` whose PROXY headers count (mode trusted)")
	fs.DurationVar(&hdrTimeout, "proxy-header-timeout", origin.DefaultHeaderTimeout, "bound on reading the PROXY header")
	fs.DurationVar(&cfg.idle, "idle-timeout", 60*time.Second, "close a connection idle this long")
	pos, err := parseInterspersed(listenCommand, fs, args, getenv)
	if errors.Is(err, flag.ErrHelp) {
		listenCommand.Help(help, fs)
		return cfg, err
	}
	if err != nil {
		return cfg, err
	}
	switch len(pos) {
	case 0:
		cfg.listenAddr = ":80"
	case 1:
		cfg.listenAddr = pos[0]
	default:
		return cfg, fmt.Errorf("listen: one address expected, got %q, e.g. nc-probe listen :8080", pos)
	}
	if _, _, err := net.SplitHostPort(cfg.listenAddr); err != nil {
		return cfg, fmt.Errorf("listen: address %q: want [HOST]:PORT, e.g. nc-probe listen :8080", cfg.listenAddr)
	}
	if cfg.origin.Mode, err = origin.ParseMode(mode); err != nil {
		return cfg, listenCommand.Invalid(fs, "proxy-protocol", err)
	}
	for _, s := range strings.Split(trusted, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return cfg, listenCommand.Invalid(fs, "trusted-proxies", fmt.Errorf("%q is not a CIDR", s))
		}
		cfg.origin.Trusted = append(cfg.origin.Trusted, p)
	}
	cfg.origin.HeaderTimeout = hdrTimeout
	if cfg.idle <= 0 {
		return cfg, listenCommand.Invalid(fs, "idle-timeout", errors.New("must be positive"))
	}
	if cfg.origin.Mode == origin.Trusted && len(cfg.origin.Trusted) == 0 {
		return cfg, errors.New("--proxy-protocol trusted needs --trusted-proxies, e.g. --trusted-proxies 10.0.0.0/8")
	}
	if _, err := origin.NewResolver(cfg.origin); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// parseInterspersed parses flags anywhere among the positional arguments,
// then fills every flag not given (under any alias) from NC_PROBE_<NAME>
// (getenv; empty is unset).
func parseInterspersed(cmd *flagenv.Command, fs *flag.FlagSet, args []string, getenv func(string) string) ([]string, error) {
	var pos []string
	for {
		if err := cmd.Parse(fs, args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	return pos, cmd.Apply(fs, func(k string) (string, bool) { v := getenv(k); return v, v != "" })
}

func checkHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil || host == "" || port == "" {
		return fmt.Errorf("target %q is not HOST:PORT, e.g. app.example.com:80", s)
	}
	return nil
}

func parseAddrPort(s string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return ap, err
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}
