package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/originlens/originlens/internal/geo"
	"github.com/originlens/originlens/internal/kafka"
	"github.com/originlens/originlens/internal/limit"
	"github.com/originlens/originlens/internal/origin"
	"github.com/originlens/originlens/internal/policy"
	"github.com/originlens/originlens/internal/server"
	"github.com/twmb/franz-go/pkg/kfake"
)

// BenchmarkServeConn is the app's connection path in process, wired as
// cmd/app wires it (PROXY trusted from loopback, the benchmark's City
// database, the default rules, a Kafka producer with the app's default
// batching and zstd into kfake), driven over loopback by the load
// generator's connection (PROXY v2 header and first line, reply read, client close). It exists
// for pprof, since the app serves no /debug/pprof:
//
//	go test -run '^$' -bench ServeConn -benchtime 20000x \
//	  -cpuprofile cpu.out -memprofile mem.out ./bench/peer
//	go tool pprof -top -focus 'originlens/internal' mem.out
//
// The allocations it reports include the client side (dial, buffers).
func BenchmarkServeConn(b *testing.B) {
	dir := b.TempDir()
	db := filepath.Join(dir, "city.mmdb")
	if err := writeCityDB(db); err != nil {
		b.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, brokerTopic))
	if err != nil {
		b.Fatal(err)
	}
	defer cluster.Close()

	resolver, err := origin.NewResolver(origin.Config{
		Mode: origin.Trusted, Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		HeaderTimeout: 5 * time.Second,
	})
	if err != nil {
		b.Fatal(err)
	}
	locator, err := geo.Open(geo.Config{CityPath: db, Logger: log})
	if err != nil {
		b.Fatal(err)
	}
	defer locator.Close()
	pub, err := kafka.NewProducer(kafka.ProducerConfig{
		Brokers: cluster.ListenAddrs(), Topic: brokerTopic,
		BatchSize: 1000, Linger: 100 * time.Millisecond, Compression: "zstd", QueueSize: 65536,
		SpoolDir: b.TempDir(), Logger: log,
	})
	if err != nil {
		b.Fatal(err)
	}
	limiter, err := limit.New(limit.Config{})
	if err != nil {
		b.Fatal(err)
	}
	srv, err := server.New(server.Config{
		Resolver: resolver, Locator: locator, Decider: policy.Default(), Limiter: limiter,
		Publisher: pub, MaxConns: 10000, FirstBytesTimeout: 10 * time.Second, IdleTimeout: time.Minute,
		MaxLine: 4096, DrainTimeout: 5 * time.Second, Logger: log,
	})
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	pubCtx, stopPub := context.WithCancel(context.Background())
	served, published := make(chan error, 1), make(chan error, 1)
	go func() { published <- pub.Run(pubCtx) }()
	go func() { served <- srv.Serve(ctx, ln) }()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			b.Errorf("Serve: %v", err)
		}
		stopPub()
		<-published
		cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer ccancel()
		if err := pub.Close(cctx); err != nil {
			b.Errorf("closing the producer: %v", err)
		}
	}()

	clients, err := newClients(1024, benchNets, headerDst)
	if err != nil {
		b.Fatal(err)
	}
	raddr := ln.Addr().(*net.TCPAddr)
	b.SetParallelism(8)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		buf := make([]byte, 2048)
		i := 0
		for pb.Next() {
			if _, err := oneConn(raddr, &clients[i%len(clients)], buf, 5*time.Second, i%100 == 0, appReplyLines); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
}
