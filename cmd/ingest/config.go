package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/originlens/originlens/internal/flagenv"
	"github.com/originlens/originlens/internal/kafka"
	"github.com/originlens/originlens/internal/opensearch"
)

// errExit: --help or --version was answered; exit 0.
var errExit = errors.New("exit")

// Config is everything cmd/ingest is told, parsed and validated.
type Config struct {
	SetupOnly bool // the "setup" subcommand

	KafkaBrokers []string
	KafkaTopic   string
	Group        string
	DLQTopic     string
	Security     kafka.Security
	// SessionTimeout is how long the group waits for a silent member (a
	// crashed ingest) before giving its partitions to the others.
	SessionTimeout time.Duration

	OpenSearch    opensearch.Config
	IndexPrefix   string
	TemplateName  string
	PolicyID      string
	Retention     string
	NoSetup       bool
	DashboardsURL string
	// MapBackendRole: setup maps this backend role (the ingest's IAM role
	// ARN) to the least-privilege originlens_ingest role; empty: no change.
	MapBackendRole string

	BulkBytes        int
	BulkDocs         int
	FlushInterval    time.Duration
	Workers          int
	MaxInFlightBytes int64
	RetryMaxBackoff  time.Duration
	ShutdownGrace    time.Duration

	Admin    netip.AddrPort // invalid: disabled
	UI       netip.AddrPort // invalid: disabled
	LogLevel string

	// kafkaProbeInterval is how often readiness checks that a broker
	// answers; 0: ingest.BrokerCheck's default. Tests shorten it.
	kafkaProbeInterval time.Duration
	// hup receives a request per SIGHUP (internal/signals), set by main;
	// nil: none. ingest has nothing to reload: each is logged and ignored.
	hup <-chan struct{}
}

// byteSize is a flag value like 5MiB, 512KiB or 1048576.
type byteSize int64

// String is the size in the largest binary unit it is a whole number of
// (5MiB), as --help shows the default; Set reads it back.
func (b byteSize) String() string {
	n := int64(b)
	for _, u := range []struct {
		suf string
		m   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n != 0 && n%u.m == 0 {
			return strconv.FormatInt(n/u.m, 10) + u.suf
		}
	}
	return strconv.FormatInt(n, 10)
}

func (b *byteSize) Set(s string) error {
	mult := int64(1)
	for _, u := range []struct {
		suf string
		m   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"B", 1}} {
		if strings.HasSuffix(s, u.suf) {
			s, mult = strings.TrimSuffix(s, u.suf), u.m
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return fmt.Errorf("want a size, e.g. 5MiB, 512KiB or 1048576")
	}
	*b = byteSize(n * mult)
	return nil
}

// parseConfig parses args (without the program name); every flag falls
// back to the environment variable INGEST_<FLAG_NAME>.
func parseConfig(args []string, lookupEnv func(string) (string, bool), out io.Writer) (Config, error) {
	var cfg Config
	name := "ingest"
	if len(args) > 0 && args[0] == "setup" {
		cfg.SetupOnly = true
		args = args[1:]
		name = "ingest setup"
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are one line, from main; the help goes to out
	var (
		brokers      = fs.String("kafka-brokers", "", "Kafka bootstrap brokers host:port[,...] (required to consume)")
		topic        = fs.String("kafka-topic", "conn-events", "Kafka topic of connection events")
		group        = fs.String("group", "originlens-ingest", "Kafka consumer group")
		session      = fs.Duration("kafka-session-timeout", 30*time.Second, "consumer-group session timeout: how long a crashed member keeps its partitions (the broker allows 6s to 30m by default)")
		dlq          = fs.String("dlq-topic", "conn-events-dlq", "Kafka dead-letter topic for messages OpenSearch can never accept")
		kafkaTLS     = fs.Bool("kafka-tls", false, "connect to Kafka with TLS")
		kafkaCA      = fs.String("kafka-ca-file", "", "PEM CA bundle for --kafka-tls; empty: system roots")
		sasl         = fs.String("kafka-sasl", "none", "Kafka SASL: none, scram-sha-512 or aws-msk-iam")
		kUser        = fs.String("kafka-username", "", "SCRAM user name")
		kPass        = fs.String("kafka-password", "", "SCRAM password (prefer INGEST_KAFKA_PASSWORD)")
		kRegion      = fs.String("kafka-aws-region", "", "AWS region for aws-msk-iam; empty: from the AWS config chain")
		osURL        = fs.String("opensearch-url", "", "OpenSearch URL(s), comma separated, e.g. https://localhost:9200; empty: index nothing, only consume into the heat map (served from memory) and commit what was aggregated (required by setup)")
		osUser       = fs.String("opensearch-user", "", "OpenSearch basic-auth user")
		osPass       = fs.String("opensearch-password", "", "OpenSearch basic-auth password (prefer INGEST_OPENSEARCH_PASSWORD)")
		sigv4        = fs.String("aws-sigv4", "", "sign requests with AWS SigV4 for this region (Amazon OpenSearch Service); credentials from the AWS chain")
		sigv4Svc     = fs.String("aws-sigv4-service", "es", "SigV4 service: es (managed domains) or aoss (Serverless)")
		osCA         = fs.String("opensearch-ca-file", "", "PEM CA bundle for a self-signed cluster")
		osInsecure   = fs.Bool("opensearch-insecure", false, "skip TLS verification (local test clusters only)")
		timeout      = fs.Duration("request-timeout", 60*time.Second, "timeout of one OpenSearch request")
		prefix       = fs.String("index-prefix", "conn-events-", "daily index name prefix: <prefix>YYYY.MM.DD of the event's UTC @timestamp")
		tplName      = fs.String("template-name", "conn-events", "name of the composable index template")
		policyID     = fs.String("ism-policy", "conn-events-retention", "id of the ISM retention policy")
		retention    = fs.String("retention", "30d", "delete indices this long after creation (ISM min_index_age: 30d, 12h...)")
		noSetup      = fs.Bool("no-setup", false, "do not install the template and ISM policy at start")
		mapRole      = fs.String("map-backend-role", "", "setup only: create the least-privilege role "+opensearch.IngestRoleName+" (write the indices, manage their template and ISM policy) and add this backend role (the ingest's IAM role ARN) to its mapping, keeping the others; needs the master user")
		dashboards   = fs.String("dashboards-url", "", "OpenSearch Dashboards base URL (e.g. http://localhost:5601, https://DOMAIN/_dashboards); import the saved objects there")
		bulkDocs     = fs.Int("bulk-docs", 20000, "flush a bulk request at this many documents")
		flush        = fs.Duration("flush-interval", time.Second, "flush a bulk request when its oldest document waited this long")
		workers      = fs.Int("bulk-workers", 2, "concurrent bulk requests")
		maxBackoff   = fs.Duration("retry-max-backoff", 30*time.Second, "cap of the jittered exponential retry delay")
		grace        = fs.Duration("shutdown-grace", 10*time.Second, "time in-flight bulk requests get to finish on SIGTERM")
		admin        = fs.String("admin", "127.0.0.1:9091", "address of /metrics, /healthz and /readyz; empty: disabled")
		ui           = fs.String("ui", "127.0.0.1:8088", "address of the live heat-map page; empty: disabled")
		logLevel     = fs.String("log-level", "info", "debug, info, warn or error")
		showVersion  = fs.Bool("version", false, "print the version and exit")
		bulkBytes    = byteSize(5 << 20)
		inflightSize = byteSize(32 << 20)
	)
	fs.Var(&bulkBytes, "bulk-bytes", "flush a bulk request at this body `size` (5MiB, 512KiB, bytes)")
	fs.Var(&inflightSize, "max-inflight-bytes", "fetched but unacknowledged bytes (a `size`: 32MiB); fetching pauses above (Kafka is the buffer)")
	cmd := command
	if cfg.SetupOnly {
		cmd = setupCommand
	}
	if err := cmd.Parse(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			cmd.Help(out, fs)
			return cfg, errExit
		}
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q (flags only; see --help)", fs.Arg(0))
	}
	if err := cmd.Apply(fs, lookupEnv); err != nil {
		return cfg, err
	}
	if *showVersion {
		fmt.Fprintln(out, "ingest", version)
		return cfg, errExit
	}

	cfg.KafkaBrokers = splitList(*brokers)
	cfg.KafkaTopic, cfg.Group, cfg.DLQTopic, cfg.SessionTimeout = *topic, *group, *dlq, *session
	cfg.Security = kafka.Security{TLS: *kafkaTLS, CAFile: *kafkaCA, SASL: *sasl, Username: *kUser, Password: *kPass, AWSRegion: *kRegion}
	if cfg.Security.SASL == "none" {
		cfg.Security.SASL = ""
	}
	cfg.OpenSearch = opensearch.Config{URLs: splitList(*osURL), Username: *osUser, Password: *osPass, AWSRegion: *sigv4, AWSService: *sigv4Svc, CAFile: *osCA, Insecure: *osInsecure, Timeout: *timeout}
	cfg.IndexPrefix, cfg.TemplateName, cfg.PolicyID, cfg.Retention = *prefix, *tplName, *policyID, *retention
	cfg.NoSetup, cfg.DashboardsURL = *noSetup, strings.TrimRight(*dashboards, "/")
	cfg.MapBackendRole = *mapRole
	cfg.BulkBytes, cfg.BulkDocs, cfg.FlushInterval, cfg.Workers = int(bulkBytes), *bulkDocs, *flush, *workers
	cfg.MaxInFlightBytes, cfg.RetryMaxBackoff, cfg.ShutdownGrace = int64(inflightSize), *maxBackoff, *grace
	cfg.LogLevel = *logLevel

	var err error
	if cfg.Admin, err = optionalAddrPort("admin", *admin); err != nil {
		return cfg, err
	}
	if cfg.UI, err = optionalAddrPort("ui", *ui); err != nil {
		return cfg, err
	}
	return cfg, cfg.validate()
}

// optionalAddrPort parses an ip:port flag value, unmapped; empty is the
// zero AddrPort: the listener is off.
func optionalAddrPort(flagName, s string) (netip.AddrPort, error) {
	if s == "" {
		return netip.AddrPort{}, nil
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return ap, fmt.Errorf("--%s %s: want ip:port, e.g. 127.0.0.1:9091, or empty for none: %w", flagName, flagenv.Quote(s), err)
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

func (c *Config) validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if !c.SetupOnly && len(c.KafkaBrokers) == 0 {
		bad("--kafka-brokers is required, e.g. --kafka-brokers 127.0.0.1:9092 (or INGEST_KAFKA_BROKERS)")
	}
	if c.SetupOnly && len(c.OpenSearch.URLs) == 0 {
		bad("--opensearch-url is required, e.g. --opensearch-url https://localhost:9200 (or INGEST_OPENSEARCH_URL)")
	}
	if c.MapBackendRole != "" && !c.SetupOnly {
		bad("--map-backend-role %q: only `ingest setup` maps roles (example: ingest setup --opensearch-user admin --map-backend-role arn:aws:iam::123456789012:role/originlens-ingest)", c.MapBackendRole)
	}
	if len(c.OpenSearch.URLs) == 0 && !c.SetupOnly && c.DashboardsURL != "" {
		bad("--dashboards-url %q needs --opensearch-url, e.g. --opensearch-url https://localhost:9200", c.DashboardsURL)
	}
	for _, u := range c.OpenSearch.URLs {
		if pu, err := url.Parse(u); err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
			bad("--opensearch-url %q: want http(s)://host:port, e.g. https://localhost:9200", u)
		}
	}
	if c.DashboardsURL != "" {
		if pu, err := url.Parse(c.DashboardsURL); err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
			bad("--dashboards-url %q: want http(s)://host[:port][/base], e.g. http://localhost:5601", c.DashboardsURL)
		}
	}
	if c.OpenSearch.AWSRegion != "" && (c.OpenSearch.Username != "" || c.OpenSearch.Password != "") {
		bad("--aws-sigv4 and --opensearch-user/--opensearch-password exclude each other")
	}
	if (c.OpenSearch.Username == "") != (c.OpenSearch.Password == "") {
		bad("--opensearch-user and --opensearch-password go together")
	}
	if c.OpenSearch.AWSService != "es" && c.OpenSearch.AWSService != "aoss" {
		bad("--aws-sigv4-service %q: want es or aoss, e.g. --aws-sigv4-service aoss", c.OpenSearch.AWSService)
	}
	if msg := indexPrefixProblem(c.IndexPrefix); msg != "" {
		bad("--index-prefix %q: %s, e.g. --index-prefix conn-events-", c.IndexPrefix, msg)
	}
	if c.TemplateName == "" || c.PolicyID == "" {
		bad("--template-name %q and --ism-policy %q must not be empty, e.g. --template-name conn-events --ism-policy conn-events-retention", c.TemplateName, c.PolicyID)
	}
	if !opensearch.ValidRetention(c.Retention) {
		bad("--retention %q: want a positive number with d, h, m or s, e.g. 30d", c.Retention)
	}
	if c.BulkBytes < 1<<10 || c.BulkBytes > 100<<20 {
		bad("--bulk-bytes %s: want 1KiB to 100MiB (OpenSearch's http.max_content_length is 100MB), e.g. 5MiB", byteSize(c.BulkBytes))
	}
	if c.BulkDocs < 1 {
		bad("--bulk-docs %d: must be positive, e.g. 20000", c.BulkDocs)
	}
	if c.FlushInterval < time.Millisecond {
		bad("--flush-interval %v: must be at least 1ms, e.g. 1s", c.FlushInterval)
	}
	if c.Workers < 1 || c.Workers > 64 {
		bad("--bulk-workers %d: want 1 to 64, e.g. 2", c.Workers)
	}
	if c.MaxInFlightBytes < int64(c.BulkBytes) {
		bad("--max-inflight-bytes %s: must be at least --bulk-bytes (%s), e.g. 32MiB", byteSize(c.MaxInFlightBytes), byteSize(c.BulkBytes))
	}
	if c.RetryMaxBackoff < 100*time.Millisecond {
		bad("--retry-max-backoff %v: must be at least 100ms, e.g. 30s", c.RetryMaxBackoff)
	}
	if c.SessionTimeout < time.Second {
		bad("--kafka-session-timeout %v: must be at least 1s, e.g. 30s", c.SessionTimeout)
	}
	if c.ShutdownGrace < 0 {
		bad("--shutdown-grace %v: must not be negative, e.g. 10s", c.ShutdownGrace)
	}
	if c.KafkaTopic == "" || c.Group == "" || c.DLQTopic == "" {
		bad("--kafka-topic %q, --group %q and --dlq-topic %q must not be empty, e.g. --kafka-topic conn-events", c.KafkaTopic, c.Group, c.DLQTopic)
	}
	if c.DLQTopic == c.KafkaTopic {
		bad("--dlq-topic %q must differ from --kafka-topic, e.g. --dlq-topic %s-dlq", c.DLQTopic, c.KafkaTopic)
	}
	if !c.SetupOnly {
		if err := c.Security.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("--log-level %q: want debug, info, warn or error, e.g. --log-level debug", c.LogLevel)
	}
	if len(errs) == 0 {
		return nil
	}
	return oneLine(errs)
}

// oneLine is several configuration errors as one line (errors.Join would
// put each on its own), for main's one-line exit-2 message.
type oneLine []error

func (e oneLine) Error() string {
	msgs := make([]string, len(e))
	for i, err := range e {
		msgs[i] = err.Error()
	}
	return strings.Join(msgs, "; ")
}

func (e oneLine) Unwrap() []error { return e }

func indexPrefixProblem(p string) string {
	switch {
	case p == "":
		return "must not be empty"
	case p != strings.ToLower(p):
		return "must be lowercase"
	case strings.HasPrefix(p, "_") || strings.HasPrefix(p, "-") || strings.HasPrefix(p, "+") || strings.HasPrefix(p, "."):
		return "must not start with _, -, + or ."
	case strings.ContainsAny(p, `\/*?"<>| ,#:`):
		return `must not contain \ / * ? " < > | space , # :`
	case len(p) > 200:
		return "too long"
	}
	return ""
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
