package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	kafka "github.com/segmentio/kafka-go"
)

// BrokerCheckConfig configures a BrokerCheck.
type BrokerCheckConfig struct {
	Brokers  []string
	Dialer   *kafka.Dialer // TLS and SASL as the reader's; nil: kafka.DefaultDialer
	Interval time.Duration // between probes; <= 0: 5s
	Timeout  time.Duration // of one probe per broker; <= 0: 5s
	Logger   *slog.Logger
	Up       prometheus.Gauge // 1 while reachable, 0 otherwise; nil: none
}

// BrokerCheck tells whether a Kafka broker answers, for readiness: while
// none does, nothing can be consumed. Each probe is a real round trip, a
// new connection (with the reader's TLS and SASL) and a metadata request
// for no topic, never an answer from a client's metadata cache, and has no
// side effect on the cluster (no topic is auto-created). It logs one line
// when the brokers become unreachable (naming them and the error) and one
// when one answers again. Its methods are safe for concurrent use.
type BrokerCheck struct {
	cfg     BrokerCheckConfig
	mu      sync.Mutex
	known   bool  // a probe has finished
	err     error // of the last probe; nil: a broker answered
	readyCh chan struct{}
	once    sync.Once
}

// NewBrokerCheck returns a check that has not probed yet: not reachable.
func NewBrokerCheck(cfg BrokerCheckConfig) *BrokerCheck {
	if cfg.Dialer == nil {
		cfg.Dialer = kafka.DefaultDialer
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 5 * time.Second
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &BrokerCheck{cfg: cfg, readyCh: make(chan struct{})}
}

// Run probes at once, then every Interval, until ctx is done. It blocks
// and returns nil.
func (b *BrokerCheck) Run(ctx context.Context) error {
	t := time.NewTicker(b.cfg.Interval)
	defer t.Stop()
	for {
		err := b.probe(ctx)
		if ctx.Err() != nil {
			return nil
		}
		b.record(err)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Err is nil when the last probe reached a broker; otherwise why not
// (before the first probe: that none has run).
func (b *BrokerCheck) Err() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.known {
		return errors.New("no broker probed yet")
	}
	return b.err
}

// Reached is closed once a probe has reached a broker for the first time.
func (b *BrokerCheck) Reached() <-chan struct{} { return b.readyCh }

func (b *BrokerCheck) record(err error) {
	b.mu.Lock()
	was, known := b.err, b.known
	b.err, b.known = err, true
	b.mu.Unlock()
	switch {
	case err != nil && (was == nil || !known):
		b.cfg.Logger.Error("Kafka unreachable: no broker answers, nothing can be consumed (not ready)", "brokers", b.cfg.Brokers, "err", err)
	case err == nil && (was != nil || !known):
		b.cfg.Logger.Info("Kafka reachable: a broker answered", "brokers", b.cfg.Brokers)
	}
	if b.cfg.Up != nil {
		up := 0.0
		if err == nil {
			up = 1
		}
		b.cfg.Up.Set(up)
	}
	if err == nil {
		b.once.Do(func() { close(b.readyCh) })
	}
}

// probe tries the brokers in turn until one answers a metadata request.
// The error names the first broker's failure and how many failed.
func (b *BrokerCheck) probe(ctx context.Context) error {
	var first error
	for _, addr := range b.cfg.Brokers {
		err := b.probeOne(ctx, addr)
		if err == nil {
			return nil
		}
		if first == nil {
			first = fmt.Errorf("broker %s: %w", addr, err)
		}
		if ctx.Err() != nil {
			break
		}
	}
	if first == nil {
		return errors.New("no brokers configured")
	}
	if n := len(b.cfg.Brokers); n > 1 {
		return fmt.Errorf("%w (all %d brokers failed)", first, n)
	}
	return first
}

func (b *BrokerCheck) probeOne(ctx context.Context, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, b.cfg.Timeout)
	defer cancel()
	conn, err := b.cfg.Dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	if err := conn.SetDeadline(deadline); err != nil {
		return err
	}
	if _, err := conn.Brokers(); err != nil {
		return fmt.Errorf("metadata request: %w", err)
	}
	return nil
}
