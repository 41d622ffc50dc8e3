package ingest_test

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/originlens/originlens/internal/ingest"
	"github.com/originlens/originlens/internal/syncbuf"
)

// deadAddr is a loopback address nothing listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// Ensure the check is not reachable before a probe, reaches a live broker
// behind a dead one, and names the first dead broker when none answers.
func TestBrokerCheck(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	dead := deadAddr(t)
	tests := []struct {
		brokers []string
		wantErr string // empty: reachable
	}{
		{[]string{dead, c.ListenAddrs()[0]}, ""},
		{[]string{dead}, "broker " + dead + ": "},
		{[]string{dead, deadAddr(t)}, "(all 2 brokers failed)"},
	}
	for _, tt := range tests {
		var logs syncbuf.Buffer
		b := ingest.NewBrokerCheck(ingest.BrokerCheckConfig{Brokers: tt.brokers, Interval: time.Hour, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		if b.Err() == nil {
			t.Fatal("reachable before any probe")
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- b.Run(ctx) }()
		deadline := time.Now().Add(30 * time.Second)
		for logs.String() == "" && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Run = %v", err)
		}
		err := b.Err()
		select {
		case <-b.Reached():
			if tt.wantErr != "" {
				t.Errorf("%v: Reached closed with no broker up", tt.brokers)
			}
		default:
			if tt.wantErr == "" {
				t.Errorf("%v: Reached not closed: %v", tt.brokers, err)
			}
		}
		if tt.wantErr == "" {
			if err != nil || !strings.Contains(logs.String(), "Kafka reachable") {
				t.Errorf("%v: Err %v, logs %q; want reachable", tt.brokers, err, logs.String())
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("%v: Err %v; want %q", tt.brokers, err, tt.wantErr)
		}
		if l := logs.String(); strings.Count(l, "\n") != 1 || !strings.Contains(l, "Kafka unreachable") || !strings.Contains(l, dead) {
			t.Errorf("%v: logs %q; want one line naming %s", tt.brokers, l, dead)
		}
	}
}
