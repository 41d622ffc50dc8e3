package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	kafkago "github.com/segmentio/kafka-go"
	"golang.org/x/sync/errgroup"

	"github.com/originlens/originlens/deploy/dashboards"
	opensearchassets "github.com/originlens/originlens/deploy/opensearch"
	"github.com/originlens/originlens/internal/heatmap"
	"github.com/originlens/originlens/internal/ingest"
	"github.com/originlens/originlens/internal/kafka"
	"github.com/originlens/originlens/internal/opensearch"
	"github.com/originlens/originlens/internal/signals"
)

// run is the whole service. It blocks until ctx ends (nil) or something
// fails for good.
func run(ctx context.Context, cfg Config, stdout, stderr io.Writer) error {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	// Without --opensearch-url nothing is indexed: the ingest consumes,
	// aggregates into its heat map and commits what it aggregated.
	var osc *opensearch.Client
	if len(cfg.OpenSearch.URLs) > 0 {
		c, err := opensearch.New(ctx, cfg.OpenSearch)
		if err != nil {
			return err
		}
		defer c.Close()
		osc = c
	}
	sc := opensearch.SetupConfig{
		IndexPrefix: cfg.IndexPrefix, TemplateName: cfg.TemplateName, PolicyID: cfg.PolicyID,
		Retention: cfg.Retention, Template: opensearchassets.IndexTemplate, Policy: opensearchassets.ISMPolicy,
	}

	if cfg.SetupOnly {
		if cfg.MapBackendRole != "" {
			m, err := osc.MapBackendRole(ctx, opensearch.IngestRoleName, opensearch.IngestRole(cfg.IndexPrefix), cfg.MapBackendRole)
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "role %s (%s*): %s; backend roles mapped: %s\n", m.Role, cfg.IndexPrefix, strings.ToLower(m.RoleStatus), strings.Join(m.BackendRoles, ", "))
		}
		if err := osc.Setup(ctx, sc); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "installed index template %s (%s*) and ISM policy %s (delete after %s)\n", cfg.TemplateName, cfg.IndexPrefix, cfg.PolicyID, cfg.Retention)
		if cfg.DashboardsURL != "" {
			if err := osc.ImportDashboards(ctx, cfg.DashboardsURL, cfg.IndexPrefix, dashboardFiles()); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "imported dashboards: open %s/app/dashboards#/view/originlens-connections\n", cfg.DashboardsURL)
		}
		return nil
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := ingest.NewMetrics(reg)
	var setupDone atomic.Bool
	var pipe atomic.Pointer[ingest.Pipeline]
	if osc == nil {
		setupDone.Store(true) // nothing to set up
	}

	// Readiness needs a broker that answers: until one does, and while
	// none does, nothing can be consumed.
	dialer, err := cfg.Security.Dialer(ctx)
	if err != nil {
		return fmt.Errorf("kafka dialer: %w", err)
	}
	brokers := ingest.NewBrokerCheck(ingest.BrokerCheckConfig{
		Brokers: cfg.KafkaBrokers, Dialer: dialer, Interval: cfg.kafkaProbeInterval, Logger: log, Up: metrics.KafkaUp,
	})

	var servers []*http.Server
	var listeners []net.Listener
	closeListeners := func() {
		for _, ln := range listeners {
			ln.Close()
		}
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		p := pipe.Load()
		kerr := brokers.Err()
		switch {
		case kerr != nil:
			http.Error(w, "not ready: Kafka unreachable, nothing can be consumed: "+kerr.Error(), http.StatusServiceUnavailable)
		case !setupDone.Load():
			http.Error(w, "not ready: OpenSearch setup pending", http.StatusServiceUnavailable)
		case p == nil || !p.Ready():
			if p != nil && p.Blocked() {
				http.Error(w, "not ready: OpenSearch refuses writes (flood stage or read-only block?)", http.StatusServiceUnavailable)
				return
			}
			http.Error(w, "not ready: consumer not running", http.StatusServiceUnavailable)
		default:
			fmt.Fprintln(w, "ready")
		}
	})
	if cfg.Admin.IsValid() {
		adminLn, err := net.Listen("tcp", cfg.Admin.String())
		if err != nil {
			return fmt.Errorf("listening on --admin: %w", err)
		}
		servers = append(servers, &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second})
		listeners = append(listeners, adminLn)
		log.Info("admin listening", "addr", adminLn.Addr().String())
	}

	agg := heatmap.NewAggregator()
	if cfg.UI.IsValid() {
		uiLn, err := net.Listen("tcp", cfg.UI.String())
		if err != nil {
			closeListeners()
			return fmt.Errorf("listening on --ui: %w", err)
		}
		// With OpenSearch, the page shows the aggregations over the indexed
		// events (every ingest's, the last day), and falls back to this
		// process's own view when the search fails.
		var src heatmap.Source = agg
		if osc != nil {
			src = heatmap.Fallback(heatmap.NewOpenSearchSource(osc, heatmap.OpenSearchConfig{Index: cfg.IndexPrefix + "*", Window: 24 * time.Hour}), agg)
		}
		servers = append(servers, &http.Server{Handler: heatmap.Handler(src, heatmap.WithLogger(log)), ReadHeaderTimeout: 5 * time.Second})
		listeners = append(listeners, uiLn)
		log.Info("heat map listening", "url", "http://"+uiLn.Addr().String()+"/")
	}

	// SIGHUPs are logged and ignored for as long as run runs, the drain
	// included.
	hupCtx, stopHUP := context.WithCancel(context.WithoutCancel(ctx))
	hupDone := make(chan struct{})
	go func() {
		defer close(hupDone)
		ignoreHUP(hupCtx, ctx.Done(), cfg.hup, log)
	}()
	defer func() { stopHUP(); <-hupDone }()

	g, gctx := errgroup.WithContext(ctx)
	for i, srv := range servers {
		ln := listeners[i]
		g.Go(func() error {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("serving %s: %w", ln.Addr(), err)
			}
			return nil
		})
	}
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		for _, srv := range servers {
			_ = srv.Shutdown(sctx)
		}
		return nil
	})
	g.Go(func() error { return brokers.Run(gctx) })
	g.Go(func() error {
		defer func() {
			// the pipeline is done: let the servers go too
			if ctx.Err() == nil {
				log.Info("consumer stopped")
			}
		}()
		if osc == nil {
			log.Warn("no --opensearch-url: NOTHING IS INDEXED; events are only aggregated into the heat map, and their offsets are committed once aggregated")
		} else if !cfg.NoSetup {
			if !setupUntilDone(gctx, log, osc, sc) {
				return nil
			}
			if cfg.DashboardsURL != "" {
				if err := osc.ImportDashboards(gctx, cfg.DashboardsURL, cfg.IndexPrefix, dashboardFiles()); err != nil {
					log.Error("importing dashboards (ingest continues)", "err", err)
				} else {
					log.Info("dashboards imported", "url", cfg.DashboardsURL+"/app/dashboards#/view/originlens-connections")
				}
			}
		}
		setupDone.Store(true)
		err := consume(gctx, cfg, dialer, brokers.Reached(), log, metrics, osc, agg, &pipe)
		if err != nil {
			return err
		}
		return errStopped
	})
	err = g.Wait()
	if errors.Is(err, errStopped) || (err != nil && ctx.Err() != nil && errors.Is(err, context.Canceled)) {
		return nil
	}
	return err
}

// ignoreHUP logs each request from hup until ctx is done: ingest has
// nothing to reload. stopping closed means the shutdown has begun. It
// blocks.
func ignoreHUP(ctx context.Context, stopping <-chan struct{}, hup <-chan struct{}, log *slog.Logger) {
	signals.OnReload(ctx, hup, stopping, func(draining bool) {
		if draining {
			log.Warn("SIGHUP during the shutdown: ignored")
			return
		}
		log.Info("SIGHUP: ingest has nothing to reload; ignored")
	})
}

// errStopped ends the errgroup when the consumer returned cleanly.
var errStopped = errors.New("consumer stopped")

// setupUntilDone installs template and policy, retrying with backoff while
// OpenSearch is unreachable. False: ctx ended first.
func setupUntilDone(ctx context.Context, log *slog.Logger, osc *opensearch.Client, sc opensearch.SetupConfig) bool {
	delay := time.Second
	for {
		err := osc.Setup(ctx, sc)
		if err == nil {
			log.Info("OpenSearch setup done", "template", sc.TemplateName, "policy", sc.PolicyID, "retention", sc.Retention)
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		log.Error("OpenSearch setup failed; retrying before the first write", "err", err, "in", delay)
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return false
		}
		delay = min(2*delay, 30*time.Second)
	}
}

// consume waits until a broker has answered (reached closed; the broker
// check logs why not until then), creates the dead-letter topic and runs
// the pipeline until ctx is done.
func consume(ctx context.Context, cfg Config, dialer *kafkago.Dialer, reached <-chan struct{}, log *slog.Logger, metrics *ingest.Metrics, osc *opensearch.Client, agg *heatmap.Aggregator, pipe *atomic.Pointer[ingest.Pipeline]) error {
	select {
	case <-reached:
	case <-ctx.Done():
		return nil
	}
	transport, err := cfg.Security.Transport(ctx)
	if err != nil {
		return fmt.Errorf("kafka transport: %w", err)
	}
	rc := ingest.ReaderConfig(cfg.KafkaBrokers, cfg.KafkaTopic, cfg.Group, dialer, cfg.SessionTimeout)
	rc.ErrorLogger = kafkago.LoggerFunc(func(msg string, args ...any) { log.Warn("kafka reader: " + fmt.Sprintf(msg, args...)) })
	ensureDLQTopic(ctx, log, cfg, transport)
	reader := kafkago.NewReader(rc)
	defer reader.Close()
	dlq := &kafkago.Writer{
		Addr:         kafkago.TCP(cfg.KafkaBrokers...),
		Topic:        cfg.DLQTopic,
		Balancer:     &kafkago.Hash{},
		RequiredAcks: kafkago.RequireAll,
		BatchTimeout: 10 * time.Millisecond,
		Transport:    transport,
	}
	defer dlq.Close()

	var idx ingest.Indexer // nil without OpenSearch (not a nil *Client)
	if osc != nil {
		idx = osc
	}
	p := ingest.New(ingest.Config{
		IndexPrefix:      cfg.IndexPrefix,
		BulkBytes:        cfg.BulkBytes,
		BulkDocs:         cfg.BulkDocs,
		FlushInterval:    cfg.FlushInterval,
		Workers:          cfg.Workers,
		MaxInFlightBytes: cfg.MaxInFlightBytes,
		BackoffMax:       cfg.RetryMaxBackoff,
		ShutdownGrace:    cfg.ShutdownGrace,
		Logger:           log,
		Metrics:          metrics,
	}, reader, idx, dlq, agg)
	pipe.Store(p)
	log.Info("consuming", "brokers", cfg.KafkaBrokers, "topic", cfg.KafkaTopic, "group", cfg.Group, "dlq", cfg.DLQTopic, "index", cfg.IndexPrefix+"YYYY.MM.DD")
	return p.Run(ctx)
}

// ensureDLQTopic creates the dead-letter topic unless it exists: without
// it, a message that cannot be indexed is retried forever and holds back
// its partition's commits. When creation fails (e.g. no CreateTopics
// permission) it logs a loud error naming the topic and returns: the topic
// may still exist, or be created by an operator.
func ensureDLQTopic(ctx context.Context, log *slog.Logger, cfg Config, transport *kafkago.Transport) {
	cl := &kafkago.Client{Addr: kafkago.TCP(cfg.KafkaBrokers...), Transport: transport, Timeout: 15 * time.Second}
	if err := kafka.CreateTopic(ctx, cl, cfg.DLQTopic, 1, -1); err != nil {
		if ctx.Err() == nil {
			log.Error("DEAD-LETTER TOPIC NOT CREATED: create it, or a message that cannot be indexed is retried forever and holds back its partition", "topic", cfg.DLQTopic, "err", err)
		}
		return
	}
	log.Info("dead-letter topic ready", "topic", cfg.DLQTopic)
}

func dashboardFiles() []opensearch.DashboardsFile {
	var out []opensearch.DashboardsFile
	for _, f := range dashboards.Files() {
		out = append(out, opensearch.DashboardsFile{Name: f.Name, Data: f.Data})
	}
	return out
}
