// Command devkafka runs an in-process Kafka broker on loopback for local
// development and the demo: github.com/twmb/franz-go/pkg/kfake, which speaks
// the real Kafka protocol, so bin/app and bin/ingest talk to it as to any
// broker. It is not a Kafka server for anything but a laptop: data lives in
// memory unless --data-dir is set, and it listens on 127.0.0.1 only.
//
// It prints the broker address (host:port) as the first line of stdout, and
// writes it to --addr-file when set, then runs until SIGINT or SIGTERM.
//
//	devkafka                       # random free port
//	devkafka --port 9092 --topics conn-events --partitions 3
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/twmb/franz-go/pkg/kfake"
)

var version = "dev"

// Config is devkafka's configuration.
type Config struct {
	Port       int      // 0: a free port
	Topics     []string // created at start
	Partitions int      // for the seeded and auto-created topics
	AddrFile   string   // where to write the address; empty: nowhere
	DataDir    string   // persist the log here; empty: memory only
	Verbose    bool     // log kfake's warnings and errors to stderr
}

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Getenv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "devkafka:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "devkafka:", err)
		os.Exit(1)
	}
}

// parseFlags reads the flags; every flag falls back to DEVKAFKA_<NAME>.
func parseFlags(args []string, getenv func(string) string, stderr io.Writer) (Config, error) {
	fs := flag.NewFlagSet("devkafka", flag.ContinueOnError)
	fs.SetOutput(stderr)
	env := func(name, def string) string {
		if v := getenv("DEVKAFKA_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))); v != "" {
			return v
		}
		return def
	}
	port := fs.String("port", env("port", "0"), "TCP port on 127.0.0.1; 0 picks a free one")
	topics := fs.String("topics", env("topics", "conn-events"), "comma-separated topics to create at start")
	parts := fs.String("partitions", env("partitions", "3"), "partitions of each topic")
	addrFile := fs.String("addr-file", env("addr-file", ""), "write the broker address to this file once listening")
	dataDir := fs.String("data-dir", env("data-dir", ""), "persist the log in this directory (default: memory only)")
	verbose := fs.Bool("verbose", env("verbose", "") == "true", "log the broker's warnings and errors")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if *showVersion {
		fmt.Fprintln(stderr, "devkafka", version)
		return Config{}, flag.ErrHelp
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	var cfg Config
	var err error
	if cfg.Port, err = strconv.Atoi(*port); err != nil || cfg.Port < 0 || cfg.Port > 65535 {
		return Config{}, fmt.Errorf("invalid --port %q: want 0..65535", *port)
	}
	if cfg.Partitions, err = strconv.Atoi(*parts); err != nil || cfg.Partitions < 1 || cfg.Partitions > 1000 {
		return Config{}, fmt.Errorf("invalid --partitions %q: want 1..1000", *parts)
	}
	for t := range strings.SplitSeq(*topics, ",") {
		if t = strings.TrimSpace(t); t != "" {
			cfg.Topics = append(cfg.Topics, t)
		}
	}
	cfg.AddrFile, cfg.DataDir, cfg.Verbose = *addrFile, *dataDir, *verbose
	return cfg, nil
}

// slogLogger adapts kfake's logger to log/slog.
type slogLogger struct{ l *slog.Logger }

func (s slogLogger) Logf(level kfake.LogLevel, format string, args ...any) {
	lv := slog.LevelDebug
	switch level {
	case kfake.LogLevelError:
		lv = slog.LevelError
	case kfake.LogLevelWarn:
		lv = slog.LevelWarn
	case kfake.LogLevelInfo:
		lv = slog.LevelInfo
	}
	s.l.Log(context.Background(), lv, fmt.Sprintf(format, args...))
}

// run starts the broker, prints its address to stdout and blocks until ctx
// is done, then closes the broker and removes the address file.
func run(ctx context.Context, cfg Config, stdout, stderr io.Writer) error {
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.AllowAutoTopicCreation(),
		kfake.DefaultNumPartitions(cfg.Partitions),
	}
	if cfg.Port != 0 {
		opts = append(opts, kfake.Ports(cfg.Port))
	}
	if len(cfg.Topics) > 0 {
		opts = append(opts, kfake.SeedTopics(int32(cfg.Partitions), cfg.Topics...))
	}
	if cfg.DataDir != "" {
		opts = append(opts, kfake.DataDir(cfg.DataDir))
	}
	if cfg.Verbose {
		opts = append(opts, kfake.WithLogger(slogLogger{slog.New(slog.NewTextHandler(stderr, nil))}))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return fmt.Errorf("starting the broker: %w", err)
	}
	defer c.Close()
	addr := c.ListenAddrs()[0]
	if cfg.AddrFile != "" {
		// Write then rename, so that a reader never sees a partial address.
		tmp := cfg.AddrFile + ".tmp"
		if err := os.WriteFile(tmp, []byte(addr+"\n"), 0o644); err != nil {
			return fmt.Errorf("writing the address file: %w", err)
		}
		if err := os.Rename(tmp, cfg.AddrFile); err != nil {
			return fmt.Errorf("writing the address file: %w", err)
		}
		defer os.Remove(cfg.AddrFile)
	}
	fmt.Fprintln(stdout, addr)
	fmt.Fprintf(stderr, "devkafka %s: broker on %s, topics %s (%d partitions), data %s; Ctrl-C stops\n",
		version, addr, strings.Join(cfg.Topics, ","), cfg.Partitions, dataDesc(cfg.DataDir))
	<-ctx.Done()
	return nil
}

func dataDesc(dir string) string {
	if dir == "" {
		return "in memory"
	}
	return filepath.Clean(dir)
}
