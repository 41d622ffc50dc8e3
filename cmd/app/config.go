package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/originlens/originlens/internal/flagenv"
	"github.com/originlens/originlens/internal/geo"
	"github.com/originlens/originlens/internal/limit"
	"github.com/originlens/originlens/internal/origin"
	"github.com/originlens/originlens/internal/relay"
	"github.com/originlens/originlens/internal/udp"
)

// config is the validated command line.
type config struct {
	Listen string // --listen host:port
	Admin  string // --admin host:port; empty: no admin listener

	ProxyMode          origin.Mode
	TrustedProxies     []netip.Prefix
	ProxyHeaderTimeout time.Duration

	MaxConns          int
	IdleTimeout       time.Duration
	MaxLine           int
	FirstBytesTimeout time.Duration
	DrainTimeout      time.Duration

	GeoIPDB, ASNDB, Policy string
	GeoReloadInterval      time.Duration

	MaxConnsPerIP  int
	ConnRatePerIP  float64
	ConnBurstPerIP int
	LimitPrefixV4  int // per-source limits count addresses by this prefix
	LimitPrefixV6  int

	KafkaBrokers           []string
	KafkaTopic             string
	KafkaBatchSize         int
	KafkaLinger            time.Duration
	KafkaCompression       string
	KafkaCreateTopic       bool
	KafkaPartitions        int
	KafkaReplicationFactor int
	KafkaTLS               bool
	KafkaCAFile            string
	KafkaSASL              string
	KafkaUsername          string
	KafkaPassword          string
	KafkaAWSRegion         string
	QueueSize              int
	SpoolDir               string
	SpoolMaxBytes          int64
	SpoolFsyncInterval     time.Duration
	KafkaBuffer            string // kafka.BufferMemory or kafka.BufferDisk
	KafkaRetryInterval     time.Duration

	Upstream     string     // --upstream host:port; empty: the app answers itself
	UpstreamMode relay.Mode // --upstream-mode
	UpstreamMark int        // --upstream-mark; 0: none

	LogLevel  slog.Level
	LogFormat string // text or json

	ListenUDP      string        // --listen-udp host:port; empty: no UDP
	UDPIdleTimeout time.Duration // --udp-idle-timeout: a flow idle this long is published
	UDPMaxFlows    int           // --udp-max-flows
	UDPRatePerIP   float64       // --udp-rate-per-ip: replies per second per source
	UDPBurstPerIP  int           // --udp-burst-per-ip
	// UDPMaxFlowsPerIP: --udp-max-flows-per-ip, flows one source (a
	// --limit-prefix-v4/v6 prefix) may hold open.
	UDPMaxFlowsPerIP int

	// ready, when set (by tests), is called with the bound addresses once
	// the listeners are open; admin is nil without an admin listener.
	ready func(app, admin net.Addr)
	// reload receives a request per SIGHUP (internal/signals), set by
	// main; nil: no reloads.
	reload <-chan struct{}
	// readyUDP, when set (by tests), is called with the UDP address once
	// it is open.
	readyUDP func(net.Addr)
}

// errExit: --help or --version was handled; exit 0.
var errExit = errors.New("exit")

// configError is a bad flag value or a setting that a component rejected
// before anything listened: the process exits with status 2.
type configError struct{ err error }

func (e *configError) Error() string { return e.err.Error() }
func (e *configError) Unwrap() error { return e.err }

// envName is the environment variable that backs a flag.
func envName(flagName string) string { return flagenv.Name(envPrefix, flagName) }

// envPrefix is the prefix of the environment variables the flags read.
const envPrefix = "APP_"

// cmdOnly are the flags that read the command line only: requests, not
// settings (CI and container images set APP_VERSION for their own use).
var cmdOnly = []string{"version"}

// parseConfig parses args, falling back to APP_* environment variables
// (lookupEnv) for flags not on the command line, and validates the result.
// --help and --version print to out and return errExit. Errors are one line.
func parseConfig(args []string, lookupEnv func(string) (string, bool), out io.Writer) (config, error) {
	fs := flag.NewFlagSet("app", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var (
		listen       = fs.String("listen", ":80", "TCP address to serve clients on (IPv4 and IPv6)")
		admin        = fs.String("admin", "127.0.0.1:9090", "admin HTTP address for /metrics, /healthz, /readyz; empty: none")
		proxyMode    = fs.String("proxy-protocol", "off", "PROXY protocol mode: off, required or trusted")
		trusted      = fs.String("trusted-proxies", "", "comma-separated CIDRs whose PROXY headers count (mode trusted)")
		headerTO     = fs.Duration("proxy-header-timeout", origin.DefaultHeaderTimeout, "time allowed for the PROXY header")
		maxConns     = fs.Int("max-conns", 10000, "maximum concurrent connections; more are closed at once")
		idleTO       = fs.Duration("idle-timeout", 60*time.Second, "close a connection idle this long")
		maxLine      = fs.Int("max-line", 4096, "maximum line length in bytes (line protocol)")
		firstTO      = fs.Duration("first-bytes-timeout", 10*time.Second, "time allowed for the client's first line")
		drainTO      = fs.Duration("drain-timeout", 15*time.Second, "on SIGTERM, time open connections get to finish")
		geoipDB      = fs.String("geoip-db", "", "GeoIP2/GeoLite2 City or Country database (.mmdb); empty: classify only")
		asnDB        = fs.String("asn-db", "", "GeoIP2/GeoLite2 ASN database (.mmdb)")
		geoReload    = fs.Duration("geoip-reload-interval", geo.DefaultReloadInterval, "how often to check the database files for a replacement (geoipupdate) and reload them")
		policyPath   = fs.String("policy", "", "residency rules file (YAML); empty: embedded defaults; SIGHUP reloads")
		perIP        = fs.Int("max-conns-per-ip", 0, "maximum open connections per client address; 0: off")
		ratePerIP    = fs.Float64("conn-rate-per-ip", 0, "new connections per second per client address; 0: off")
		burstPerIP   = fs.Int("conn-burst-per-ip", 0, "burst for --conn-rate-per-ip; 0: max(1, rate)")
		prefixV4     = fs.Int("limit-prefix-v4", limit.DefaultPrefixV4, "IPv4 prefix length the per-IP limits count as one source (1-32)")
		prefixV6     = fs.Int("limit-prefix-v6", limit.DefaultPrefixV6, "IPv6 prefix length the per-IP limits count as one source (1-128); a host usually holds a /64")
		brokers      = fs.String("kafka-brokers", "", "Kafka bootstrap brokers host:port[,...]; empty: events as JSON lines on stdout")
		topic        = fs.String("kafka-topic", "conn-events", "Kafka topic for connection events")
		batchSize    = fs.Int("kafka-batch-size", 1000, "events per Kafka batch")
		linger       = fs.Duration("kafka-linger", 100*time.Millisecond, "longest wait to fill a Kafka batch")
		compression  = fs.String("kafka-compression", "lz4", "Kafka compression: lz4, zstd or none; lz4 costs 2-3.5x less CPU per event, zstd sends batches ~40% smaller")
		createTopic  = fs.Bool("kafka-create-topic", false, "create the topic at start when missing")
		partitions   = fs.Int("kafka-partitions", 6, "partitions for --kafka-create-topic")
		replication  = fs.Int("kafka-replication-factor", 0, "replication factor for --kafka-create-topic; 0: the broker's default")
		kafkaTLS     = fs.Bool("kafka-tls", false, "connect to Kafka with TLS")
		caFile       = fs.String("kafka-ca-file", "", "PEM CA bundle for --kafka-tls; empty: system roots")
		sasl         = fs.String("kafka-sasl", "none", "Kafka SASL: none, scram-sha-512 or aws-msk-iam")
		username     = fs.String("kafka-username", "", "SCRAM user name")
		password     = fs.String("kafka-password", "", "SCRAM password (prefer the environment variable)")
		awsRegion    = fs.String("kafka-aws-region", "", "AWS region for aws-msk-iam; empty: from the AWS config chain")
		queueSize    = fs.Int("queue-size", 65536, "in-memory event queue; when full, events go to the spool")
		spoolDir     = fs.String("spool-dir", "", "directory for events Kafka cannot take; empty: /var/lib/originlens/spool when writable, else ./spool")
		spoolMax     = fs.Int64("spool-max-bytes", 1<<30, "spool size limit in bytes")
		spoolFsync   = fs.Duration("spool-fsync-interval", time.Second, "how often the spool is fsynced")
		kafkaRetry   = fs.Duration("kafka-retry-interval", 2*time.Second, "how often a degraded Kafka sink probes the broker")
		kafkaBuffer  = fs.String("kafka-buffer", "disk", "where an event waits for Kafka: disk (appended to the spool before it counts as published: a SIGKILL loses none; ~1.5 µs more per event) or memory (a SIGKILL loses the queue and the batch in flight)")
		upstream     = fs.String("upstream", "", "relay served clients to this host:port instead of answering (e.g. 127.0.0.1:8080); empty: answer")
		upstreamMode = fs.String("upstream-mode", "transparent", "how the upstream learns the client: transparent, proxy-v2, proxy-v1 or plain")
		upstreamMark = fs.Int("upstream-mark", 0, "SO_MARK (fwmark) on upstream connections, for policy routing; 0: none")
		logLevel     = fs.String("log-level", "info", "log level: debug, info, warn or error")
		logFormat    = fs.String("log-format", "text", "log format: text or json")
		printVersion = fs.Bool("version", false, "print the version and exit")
	)
	var (
		listenUDP = fs.String("listen-udp", "", "UDP address to answer datagrams on (one report per datagram, one event per flow); empty: no UDP")
		udpIdle   = fs.Duration("udp-idle-timeout", udp.DefaultIdleTimeout, "a UDP flow idle this long is published (Global Accelerator: 30s, NLB: 120s)")
		udpFlows  = fs.Int("udp-max-flows", udp.DefaultMaxFlows, "UDP flows tracked at once; over it the least recently seen flow of the source holding the most flows is published")
		udpRate   = fs.Float64("udp-rate-per-ip", 100, "UDP replies per second per source address (IPv6: per /64); 0: off")
		udpBurst  = fs.Int("udp-burst-per-ip", 200, "burst for --udp-rate-per-ip; 0: max(1, rate)")
		udpPerIP  = fs.Int("udp-max-flows-per-ip", udp.DefaultMaxFlowsPerSource, "UDP flows one source address (IPv6: per /64; see --limit-prefix-*) may hold; a datagram that would open one more gets no reply, counted")
	)
	if err := command.Parse(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			command.Help(out, fs)
			return config{}, errExit
		}
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected argument %q (flags only; see --help)", fs.Arg(0))
	}
	if err := command.Apply(fs, lookupEnv); err != nil {
		return config{}, err
	}
	if *printVersion {
		fmt.Fprintln(out, "originlens app", version)
		return config{}, errExit
	}

	cfg := config{
		Listen: *listen, Admin: *admin,
		ProxyHeaderTimeout: *headerTO,
		MaxConns:           *maxConns, IdleTimeout: *idleTO, MaxLine: *maxLine,
		FirstBytesTimeout: *firstTO, DrainTimeout: *drainTO,
		GeoIPDB: *geoipDB, ASNDB: *asnDB, Policy: *policyPath, GeoReloadInterval: *geoReload,
		MaxConnsPerIP: *perIP, ConnRatePerIP: *ratePerIP, ConnBurstPerIP: *burstPerIP,
		LimitPrefixV4: *prefixV4, LimitPrefixV6: *prefixV6,
		KafkaTopic: *topic, KafkaBatchSize: *batchSize, KafkaLinger: *linger,
		KafkaCompression: *compression, KafkaCreateTopic: *createTopic,
		KafkaPartitions: *partitions, KafkaReplicationFactor: *replication,
		KafkaTLS: *kafkaTLS, KafkaCAFile: *caFile, KafkaSASL: *sasl,
		KafkaUsername: *username, KafkaPassword: *password, KafkaAWSRegion: *awsRegion,
		QueueSize: *queueSize, SpoolDir: *spoolDir, SpoolMaxBytes: *spoolMax, SpoolFsyncInterval: *spoolFsync,
		LogFormat: *logFormat,
		ListenUDP: *listenUDP, UDPIdleTimeout: *udpIdle, UDPMaxFlows: *udpFlows, UDPRatePerIP: *udpRate, UDPBurstPerIP: *udpBurst,
	}
	var err error
	check := func(name string, e error) {
		if err == nil && e != nil {
			err = command.Invalid(fs, name, e)
		}
	}
	check("listen", checkHostPort(*listen, false))
	check("admin", checkHostPort(*admin, true))
	mode, merr := origin.ParseMode(*proxyMode)
	check("proxy-protocol", merr)
	cfg.ProxyMode = mode
	for s := range strings.SplitSeq(*trusted, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		p, perr := netip.ParsePrefix(s)
		if perr != nil {
			if a, aerr := netip.ParseAddr(s); aerr == nil {
				p, perr = netip.PrefixFrom(a, a.BitLen()), nil // a bare address is a /32 or /128
			}
		}
		check("trusted-proxies", perr)
		cfg.TrustedProxies = append(cfg.TrustedProxies, p)
	}
	if err == nil && cfg.ProxyMode == origin.Trusted && len(cfg.TrustedProxies) == 0 {
		err = errors.New("--proxy-protocol trusted needs --trusted-proxies, e.g. --trusted-proxies 10.0.0.0/8")
	}
	if err == nil && cfg.ProxyMode != origin.Trusted && len(cfg.TrustedProxies) > 0 {
		err = fmt.Errorf("--trusted-proxies is only used with --proxy-protocol trusted, not %s", cfg.ProxyMode)
	}
	check("proxy-header-timeout", positive(*headerTO))
	check("max-conns", atLeast(*maxConns, 1))
	check("idle-timeout", positive(*idleTO))
	check("max-line", atLeast(*maxLine, 64))
	check("first-bytes-timeout", positive(*firstTO))
	check("drain-timeout", positive(*drainTO))
	check("geoip-reload-interval", positive(*geoReload))
	check("max-conns-per-ip", atLeast(*perIP, 0))
	if r := *ratePerIP; r < 0 || math.IsNaN(r) || math.IsInf(r, 0) {
		// NaN and Inf parse as floats but would silently disable the limit.
		check("conn-rate-per-ip", fmt.Errorf("must be a finite number, not negative, got %v", r))
	}
	check("conn-burst-per-ip", atLeast(*burstPerIP, 0))
	check("limit-prefix-v4", prefixBits(*prefixV4, 32, "--limit-prefix-v4 32"))
	check("limit-prefix-v6", prefixBits(*prefixV6, 128, "--limit-prefix-v6 64"))
	for b := range strings.SplitSeq(*brokers, ",") {
		if b = strings.TrimSpace(b); b != "" {
			check("kafka-brokers", checkHostPort(b, false))
			cfg.KafkaBrokers = append(cfg.KafkaBrokers, b)
		}
	}
	if *topic == "" {
		check("kafka-topic", errors.New("must not be empty"))
	}
	check("kafka-batch-size", atLeast(*batchSize, 1))
	check("kafka-linger", notNegative(*linger))
	check("kafka-compression", oneOf(*compression, "zstd", "lz4", "none"))
	check("kafka-partitions", atLeast(*partitions, 1))
	check("kafka-replication-factor", atLeast(*replication, 0))
	check("kafka-sasl", oneOf(*sasl, "none", "scram-sha-512", "aws-msk-iam"))
	if *sasl == "none" {
		cfg.KafkaSASL = ""
	}
	if err == nil && *sasl == "scram-sha-512" && (*username == "" || *password == "") {
		err = errors.New("--kafka-sasl scram-sha-512 needs --kafka-username and --kafka-password, e.g. --kafka-username ingest and APP_KAFKA_PASSWORD in the environment")
	}
	check("queue-size", atLeast(*queueSize, 1))
	if *spoolMax < 0 {
		check("spool-max-bytes", errors.New("must not be negative"))
	}
	check("spool-fsync-interval", positive(*spoolFsync))
	check("kafka-buffer", oneOf(*kafkaBuffer, "memory", "disk"))
	cfg.KafkaBuffer = *kafkaBuffer
	check("kafka-retry-interval", positive(*kafkaRetry))
	cfg.KafkaRetryInterval = *kafkaRetry
	switch strings.ToLower(*logLevel) {
	case "debug":
		cfg.LogLevel = slog.LevelDebug
	case "info":
		cfg.LogLevel = slog.LevelInfo
	case "warn":
		cfg.LogLevel = slog.LevelWarn
	case "error":
		cfg.LogLevel = slog.LevelError
	default:
		check("log-level", oneOf(*logLevel, "debug", "info", "warn", "error"))
	}
	check("log-format", oneOf(*logFormat, "text", "json"))
	check("listen-udp", checkHostPort(*listenUDP, true))
	check("udp-idle-timeout", positive(*udpIdle))
	check("udp-max-flows", atLeast(*udpFlows, 1))
	if r := *udpRate; r < 0 || math.IsNaN(r) || math.IsInf(r, 0) {
		check("udp-rate-per-ip", fmt.Errorf("must be a finite number, not negative, got %v", r))
	}
	check("udp-burst-per-ip", atLeast(*udpBurst, 0))
	check("udp-max-flows-per-ip", atLeast(*udpPerIP, 1))
	cfg.UDPMaxFlowsPerIP = *udpPerIP
	cfg.Upstream, cfg.UpstreamMark = *upstream, *upstreamMark
	check("upstream", checkUpstream(*upstream, *listen))
	umode, uerr := relay.ParseMode(*upstreamMode)
	check("upstream-mode", uerr)
	cfg.UpstreamMode = umode
	check("upstream-mark", atLeast(*upstreamMark, 0))
	if err != nil {
		return config{}, err
	}
	return cfg, nil
}

// checkHostPort accepts host:port with a numeric port (host may be empty
// for all addresses); empty is allowed when optional.
func checkHostPort(s string, optional bool) error {
	if s == "" && optional {
		return nil
	}
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("address %q: want host:port", s)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || (n == 0 && !strings.HasSuffix(s, ":0")) {
		return fmt.Errorf("address %q: port must be a number 0-65535", s)
	}
	return nil
}

// checkUpstream accepts an empty value (no relay) or host:port with a port
// 1-65535 that is not the app's own listen address (a relay loop would eat
// every descriptor).
func checkUpstream(s, listen string) error {
	if s == "" {
		return nil
	}
	if err := checkHostPort(s, false); err != nil || strings.HasSuffix(s, ":0") {
		return fmt.Errorf("address %q: want host:port with a port 1-65535, e.g. 127.0.0.1:8080", s)
	}
	uh, up, _ := net.SplitHostPort(s)
	lh, lp, err := net.SplitHostPort(listen)
	if err == nil && up == lp {
		la, _ := netip.ParseAddr(lh)
		if lh == "" || la.IsUnspecified() || lh == uh {
			return fmt.Errorf("address %q is the app's own --listen %q: the relay would connect to itself; use the service's port, e.g. 127.0.0.1:8080", s, listen)
		}
	}
	return nil
}

func positive(d time.Duration) error {
	if d <= 0 {
		return fmt.Errorf("must be positive, got %v", d)
	}
	return nil
}

func notNegative(d time.Duration) error {
	if d < 0 {
		return fmt.Errorf("must not be negative, got %v", d)
	}
	return nil
}

func atLeast(n, lo int) error {
	if n < lo {
		return fmt.Errorf("must be at least %d, got %d", lo, n)
	}
	return nil
}

// prefixBits accepts a prefix length of 1 to hi bits.
func prefixBits(n, hi int, example string) error {
	if n < 1 || n > hi {
		return fmt.Errorf("must be a prefix length 1-%d, got %d (e.g. %s)", hi, n, example)
	}
	return nil
}

func oneOf(s string, allowed ...string) error {
	for _, a := range allowed {
		if s == a {
			return nil
		}
	}
	return fmt.Errorf("must be one of %s, got %q", strings.Join(allowed, ", "), s)
}
