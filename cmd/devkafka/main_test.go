package main

import (
	"bufio"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	kafkago "github.com/segmentio/kafka-go"
)

// TestRun starts the broker, reads its address from stdout as the demo does,
// and round-trips records through it with the project's Kafka client.
func TestRun(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	addrFile := filepath.Join(t.TempDir(), "addr")
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, Config{Topics: []string{"conn-events"}, Partitions: 3, AddrFile: addrFile}, pw, io.Discard)
		pw.Close()
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatalf("reading the address: %v", err)
	}
	go io.Copy(io.Discard, pr)
	addr := strings.TrimSpace(line)
	if !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Fatalf("address %q, want 127.0.0.1:port", addr)
	}
	if b, err := os.ReadFile(addrFile); err != nil || strings.TrimSpace(string(b)) != addr {
		t.Errorf("address file = %q, %v; want %q", b, err, addr)
	}

	octx, ocancel := context.WithTimeout(ctx, 30*time.Second)
	defer ocancel()
	w := &kafkago.Writer{Addr: kafkago.TCP(addr), Topic: "conn-events", Balancer: &kafkago.Hash{}, BatchTimeout: 10 * time.Millisecond, RequiredAcks: kafkago.RequireAll}
	want := []string{"one", "two", "three"}
	for _, v := range want {
		if err := w.WriteMessages(octx, kafkago.Message{Key: []byte("k"), Value: []byte(v)}); err != nil {
			t.Fatalf("producing %q: %v", v, err)
		}
	}
	w.Close()
	// Same key: same partition, in order.
	var got []string
	for p := range 3 {
		r := kafkago.NewReader(kafkago.ReaderConfig{Brokers: []string{addr}, Topic: "conn-events", Partition: p, MaxWait: 100 * time.Millisecond})
		last, err := r.ReadLag(octx)
		if err != nil {
			t.Fatalf("partition %d lag: %v", p, err)
		}
		for range last {
			m, err := r.ReadMessage(octx)
			if err != nil {
				t.Fatalf("consuming partition %d: %v", p, err)
			}
			got = append(got, string(m.Value))
		}
		r.Close()
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("consumed records (-want +got):\n%s", diff)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run() = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after cancel")
	}
	if _, err := os.Stat(addrFile); !os.IsNotExist(err) {
		t.Errorf("address file left behind: %v", err)
	}
}

func TestParseFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		want    Config
		wantErr string
	}{
		{name: "defaults", want: Config{Topics: []string{"conn-events"}, Partitions: 3}},
		{name: "flags", args: []string{"--port", "19092", "--topics", "a, b", "--partitions", "1", "--addr-file", "/x"},
			want: Config{Port: 19092, Topics: []string{"a", "b"}, Partitions: 1, AddrFile: "/x"}},
		{name: "env", env: map[string]string{"DEVKAFKA_PORT": "9092", "DEVKAFKA_ADDR_FILE": "/y"},
			want: Config{Port: 9092, Topics: []string{"conn-events"}, Partitions: 3, AddrFile: "/y"}},
		{name: "bad_port", args: []string{"--port", "70000"}, wantErr: `invalid --port "70000"`},
		{name: "bad_partitions", args: []string{"--partitions", "0"}, wantErr: `invalid --partitions "0"`},
		{name: "extra_arg", args: []string{"x"}, wantErr: `unexpected argument "x"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseFlags(tt.args, func(k string) string { return tt.env[k] }, io.Discard)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("parseFlags(%q) error = %v, want %q", tt.args, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseFlags(%q) error = %v", tt.args, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("parseFlags(%q) (-want +got):\n%s", tt.args, diff)
			}
		})
	}
}
