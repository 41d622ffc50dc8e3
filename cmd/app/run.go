package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/originlens/originlens/internal/geo"
	"github.com/originlens/originlens/internal/kafka"
	"github.com/originlens/originlens/internal/limit"
	"github.com/originlens/originlens/internal/origin"
	"github.com/originlens/originlens/internal/policy"
	"github.com/originlens/originlens/internal/server"
	"github.com/originlens/originlens/internal/signals"
	"github.com/originlens/originlens/internal/sink"
	"github.com/originlens/originlens/internal/udp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"
)

// flushTimeout bounds closing the event publisher after the drain.
const flushTimeout = 30 * time.Second

// run serves until ctx is done, then shuts down in order: stop accepting,
// drain the open connections (--drain-timeout), flush and close the event
// publisher, close the databases. It returns nil after a clean shutdown; a
// *configError when a component rejected the configuration before anything
// listened. Events go to stdout (JSON lines) unless Kafka is configured;
// logs go to stderr.
func run(ctx context.Context, cfg config, stdout, stderr io.Writer) error {
	log := newLogger(cfg, stderr)
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)

	// Components. Each failure here is a configuration error: nothing
	// listens yet. Files are checked before the geo databases open (which
	// may log), so that a bad file is the only line on stderr. The listen
	// addresses are resolved first: a host that does not resolve is a bad
	// flag value, not a failure to listen.
	for _, a := range []struct{ flag, addr string }{{"listen", cfg.Listen}, {"admin", cfg.Admin}, {"listen-udp", cfg.ListenUDP}} {
		if a.addr == "" {
			continue
		}
		if _, err := net.ResolveTCPAddr("tcp", a.addr); err != nil { // host:port resolve alike for UDP
			return &configError{fmt.Errorf("--%s: %w", a.flag, err)}
		}
	}
	resolver, err := origin.NewResolver(origin.Config{
		Mode: cfg.ProxyMode, Trusted: cfg.TrustedProxies, HeaderTimeout: cfg.ProxyHeaderTimeout,
	})
	if err != nil {
		return &configError{err}
	}
	upstream, err := newRelay(ctx, cfg, log)
	if err != nil {
		return &configError{err}
	}
	rules, err := newLivePolicy(cfg.Policy, reg)
	if err != nil {
		return &configError{err}
	}
	db, err := geo.Open(geo.Config{CityPath: cfg.GeoIPDB, ASNPath: cfg.ASNDB, ReloadInterval: cfg.GeoReloadInterval, Logger: log, Registerer: reg})
	if err != nil {
		return &configError{fmt.Errorf("opening geo databases: %w", err)}
	}
	defer db.Close()
	limiter, err := limit.New(limit.Config{
		MaxConnsPerIP: cfg.MaxConnsPerIP, RatePerIP: cfg.ConnRatePerIP, BurstPerIP: cfg.ConnBurstPerIP,
		PrefixV4: cfg.LimitPrefixV4, PrefixV6: cfg.LimitPrefixV6,
	})
	if err != nil {
		return &configError{err}
	}
	pub, err := newPublisher(cfg, stdout, log, reg)
	if err != nil {
		return &configError{err}
	}
	srv, err := server.New(server.Config{
		Resolver: resolver, Locator: db, Decider: rules, Limiter: limiter, Publisher: pub, Relay: upstream,
		MaxConns: cfg.MaxConns, FirstBytesTimeout: cfg.FirstBytesTimeout, IdleTimeout: cfg.IdleTimeout,
		MaxLine: cfg.MaxLine, DrainTimeout: cfg.DrainTimeout,
		Logger: log, Registerer: reg,
	})
	if err != nil {
		return &configError{err}
	}
	usrv, err := newUDPServer(cfg, resolver, db, rules, pub, log, reg)
	if err != nil {
		return &configError{err}
	}

	// No TCP keepalive probes (four setsockopt calls per accepted
	// connection): --idle-timeout already closes idle connections.
	lc := net.ListenConfig{KeepAlive: -1}
	ln, err := lc.Listen(ctx, "tcp", cfg.Listen)
	if err != nil {
		pub.close(context.Background())
		return fmt.Errorf("listening: %w", err)
	}
	var adminLn net.Listener
	if cfg.Admin != "" {
		if adminLn, err = net.Listen("tcp", cfg.Admin); err != nil {
			ln.Close()
			pub.close(context.Background())
			return fmt.Errorf("listening for admin: %w", err)
		}
	}
	var udpConn *net.UDPConn
	if usrv != nil {
		if udpConn, err = udp.Listen(ctx, cfg.ListenUDP); err != nil {
			ln.Close()
			if adminLn != nil {
				adminLn.Close()
			}
			pub.close(context.Background())
			return fmt.Errorf("listening for UDP: %w", err)
		}
		log.Info("serving UDP", "listen_udp", udpConn.LocalAddr().String(), "udp_idle_timeout", cfg.UDPIdleTimeout)
		if cfg.readyUDP != nil {
			cfg.readyUDP(udpConn.LocalAddr())
		}
	}
	var ready atomic.Bool
	ready.Store(true)
	adminAddr := ""
	if adminLn != nil {
		adminAddr = adminLn.Addr().String()
	}
	log.Info("serving", "listen", ln.Addr().String(), "admin", adminAddr,
		"proxy_protocol", cfg.ProxyMode.String(), "events", pub.name, "version", version)
	if cfg.ready != nil {
		var aa net.Addr
		if adminLn != nil {
			aa = adminLn.Addr()
		}
		cfg.ready(ln.Addr(), aa)
	}

	g, gctx := errgroup.WithContext(ctx)
	// The publisher outlives the drain: it runs on its own context, stopped
	// only once every connection's event has been published.
	pubCtx, stopPub := context.WithCancel(context.WithoutCancel(ctx))
	defer stopPub()
	pubDone := make(chan struct{})
	g.Go(func() error {
		defer close(pubDone)
		return pub.run(pubCtx)
	})
	// UDP stops reading and publishes its open flows; the publisher is
	// flushed once both servers are done.
	udpDone := make(chan struct{})
	if usrv != nil {
		g.Go(func() error { defer close(udpDone); return usrv.Serve(gctx, udpConn) })
	} else {
		close(udpDone)
	}
	g.Go(func() error {
		err := srv.Serve(gctx, ln)
		<-udpDone
		ready.Store(false)
		// Every event is published: flush and close the publisher (Kafka's
		// Close stops its Run and hands what Kafka cannot take to the
		// spool), then stop its delivery loop if it still runs.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), flushTimeout)
		defer cancel()
		if cerr := pub.close(cctx); cerr != nil {
			err = errors.Join(err, fmt.Errorf("closing the event publisher: %w", cerr))
		}
		stopPub()
		<-pubDone
		log.Info("stopped", "drained", err == nil)
		return err
	})
	g.Go(func() error {
		<-gctx.Done()
		ready.Store(false)
		return nil
	})
	g.Go(func() error { return db.Watch(gctx) })
	// The reloader outlives the drain, so that a SIGHUP then is logged as
	// ignored; it stops when run returns.
	reloadCtx, stopReload := context.WithCancel(context.WithoutCancel(ctx))
	reloadDone := make(chan struct{})
	go func() {
		defer close(reloadDone)
		rules.reloadOnHUP(reloadCtx, cfg.reload, gctx.Done(), log)
	}()
	defer func() { stopReload(); <-reloadDone }()
	if adminLn != nil {
		admin := &http.Server{
			Handler:           adminHandler(reg, &ready),
			ReadHeaderTimeout: 5 * time.Second,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		}
		g.Go(func() error {
			if err := admin.Serve(adminLn); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("admin: %w", err)
			}
			return nil
		})
		g.Go(func() error {
			<-gctx.Done()
			// Keep /metrics up during the drain; close once the server is done.
			<-pubDone
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			return admin.Shutdown(sctx)
		})
	}
	return g.Wait()
}

// newUDPServer builds the UDP server on the TCP server's components, or
// returns nil without --listen-udp. Its per-source reply limit is its own.
func newUDPServer(cfg config, res *origin.Resolver, db *geo.DB, rules *livePolicy, pub *publisher, log *slog.Logger, reg prometheus.Registerer) (*udp.Server, error) {
	if cfg.ListenUDP == "" {
		return nil, nil
	}
	var lim server.Limiter
	if cfg.UDPRatePerIP > 0 {
		l, err := limit.New(limit.Config{
			RatePerIP: cfg.UDPRatePerIP, BurstPerIP: cfg.UDPBurstPerIP,
			PrefixV4: cfg.LimitPrefixV4, PrefixV6: cfg.LimitPrefixV6,
		})
		if err != nil {
			return nil, err
		}
		lim = l
	}
	return udp.New(udp.Config{
		Resolver: res, Locator: db, Decider: rules, Limiter: lim, Publisher: pub,
		IdleTimeout: cfg.UDPIdleTimeout, MaxFlows: cfg.UDPMaxFlows, Logger: log, Registerer: reg,
		MaxFlowsPerSource: cfg.UDPMaxFlowsPerIP, PrefixV4: cfg.LimitPrefixV4, PrefixV6: cfg.LimitPrefixV6,
	})
}

func newLogger(cfg config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func adminHandler(reg *prometheus.Registry, ready *atomic.Bool) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready.Load() {
			http.Error(w, "draining", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ready\n")
	})
	return mux
}

// publisher is the event publisher with its life cycle: Kafka, or JSON
// lines on stdout.
type publisher struct {
	server.Publisher
	name  string
	run   func(ctx context.Context) error // blocks until ctx is done
	close func(ctx context.Context) error // flushes
}

func newPublisher(cfg config, stdout io.Writer, log *slog.Logger, reg prometheus.Registerer) (*publisher, error) {
	if len(cfg.KafkaBrokers) == 0 {
		s, err := sink.New(stdout, sink.Config{Logger: log, Registerer: reg})
		if err != nil {
			return nil, err
		}
		return &publisher{
			Publisher: s,
			name:      "stdout",
			run:       func(ctx context.Context) error { <-ctx.Done(); return nil },
			close:     func(context.Context) error { return s.Close() },
		}, nil
	}
	p, err := kafka.NewProducer(kafka.ProducerConfig{
		Brokers: cfg.KafkaBrokers,
		Topic:   cfg.KafkaTopic,
		Security: kafka.Security{
			TLS: cfg.KafkaTLS, CAFile: cfg.KafkaCAFile, SASL: cfg.KafkaSASL,
			Username: cfg.KafkaUsername, Password: cfg.KafkaPassword, AWSRegion: cfg.KafkaAWSRegion,
		},
		BatchSize:         cfg.KafkaBatchSize,
		Linger:            cfg.KafkaLinger,
		Compression:       cfg.KafkaCompression,
		QueueSize:         cfg.QueueSize,
		SpoolDir:          cfg.SpoolDir,
		SpoolMaxBytes:     cfg.SpoolMaxBytes,
		FsyncInterval:     cfg.SpoolFsyncInterval,
		Buffer:            cfg.KafkaBuffer,
		RetryInterval:     cfg.KafkaRetryInterval,
		CreateTopic:       cfg.KafkaCreateTopic,
		Partitions:        cfg.KafkaPartitions,
		ReplicationFactor: cfg.KafkaReplicationFactor,
		Logger:            log,
		Registerer:        reg,
	})
	if err != nil {
		return nil, fmt.Errorf("kafka producer: %w", err)
	}
	run := func(ctx context.Context) error {
		// A signal at start-up can close the producer before its Run
		// begins: that is a clean stop, not a failure.
		if err := p.Run(ctx); err != nil && !errors.Is(err, kafka.ErrClosed) {
			return err
		}
		return nil
	}
	return &publisher{Publisher: p, name: "kafka", run: run, close: p.Close}, nil
}

// livePolicy holds the current residency rules; SIGHUP swaps them. Decide
// is safe for concurrent use and never waits for a reload.
type livePolicy struct {
	path    string
	p       atomic.Pointer[policy.Policy]
	reloads *prometheus.CounterVec
}

func newLivePolicy(path string, reg prometheus.Registerer) (*livePolicy, error) {
	l := &livePolicy{
		path: path,
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "originlens_policy_reloads_total",
			Help: "Policy reloads on SIGHUP, by result (ok, error).",
		}, []string{"result"}),
	}
	if err := reg.Register(l.reloads); err != nil {
		return nil, err
	}
	p := policy.Default()
	if path != "" {
		var err error
		if p, err = policy.Load(path); err != nil {
			return nil, fmt.Errorf("--policy: %w", err)
		}
	}
	l.p.Store(p)
	return l, nil
}

// Decide applies the current rules.
func (l *livePolicy) Decide(addr netip.Addr, loc geo.Location) policy.Decision {
	return l.p.Load().Decide(addr, loc)
}

// reloadOnHUP reloads the rules file on each request from hup (SIGHUP,
// see internal/signals) until ctx is done, keeping the old rules when the
// new file is bad. Once draining is closed it logs each request and
// ignores it. It blocks. It does not touch the process's signal handling:
// main owns that for the process's life.
func (l *livePolicy) reloadOnHUP(ctx context.Context, hup <-chan struct{}, draining <-chan struct{}, log *slog.Logger) {
	signals.OnReload(ctx, hup, draining, func(draining bool) {
		if draining {
			log.Warn("SIGHUP during the drain: ignored (the policy is not reloaded while stopping)")
			return
		}
		l.reload(ctx, log)
	})
}

// reload loads the rules file, keeping the current rules when it is bad.
// It blocks while the file settles (see policy.LoadContext), at most until
// ctx is done.
func (l *livePolicy) reload(ctx context.Context, log *slog.Logger) {
	if l.path == "" {
		log.Info("SIGHUP: no --policy file; keeping the embedded rules")
		return
	}
	p, err := policy.LoadContext(ctx, l.path)
	if err != nil {
		l.reloads.WithLabelValues("error").Inc()
		log.Error("SIGHUP: policy reload failed; keeping the current rules", "err", err)
		return
	}
	l.p.Store(p)
	l.reloads.WithLabelValues("ok").Inc()
	log.Info("SIGHUP: policy reloaded", "path", l.path)
}
