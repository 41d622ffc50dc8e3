package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/originlens/originlens/internal/event"
	"github.com/originlens/originlens/internal/flagenv/flagenvtest"
	"github.com/originlens/originlens/internal/report"
)

// Ensure the UDP flags read their environment variables, default as the
// issue says, and reject bad values naming the flag.
func TestParseConfigUDP(t *testing.T) {
	cfg, err := parseConfig(nil, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ListenUDP != "" || cfg.UDPIdleTimeout != 30*time.Second || cfg.UDPMaxFlows < 1 || cfg.UDPMaxFlowsPerIP != 64 {
		t.Errorf("defaults: listen-udp %q, idle %v, max flows %d, per IP %d; want off, 30s, positive, 64", cfg.ListenUDP, cfg.UDPIdleTimeout, cfg.UDPMaxFlows, cfg.UDPMaxFlowsPerIP)
	}
	cfg, err = parseConfig(nil, env(map[string]string{"APP_LISTEN_UDP": "127.0.0.1:8053", "APP_UDP_IDLE_TIMEOUT": "120s", "APP_UDP_MAX_FLOWS": "7", "APP_UDP_MAX_FLOWS_PER_IP": "3"}), io.Discard)
	if err != nil || cfg.ListenUDP != "127.0.0.1:8053" || cfg.UDPIdleTimeout != 120*time.Second || cfg.UDPMaxFlows != 7 || cfg.UDPMaxFlowsPerIP != 3 {
		t.Errorf("env: %+v, %v", cfg, err)
	}
	for _, args := range [][]string{
		{"--listen-udp", "localhost"}, {"--udp-idle-timeout", "0s"}, {"--udp-max-flows", "0"},
		{"--udp-rate-per-ip", "NaN"}, {"--udp-burst-per-ip", "-1"}, {"--udp-max-flows-per-ip", "0"}, {"--udp-max-flows-per-ip", "-1"},
	} {
		_, err := parseConfig(args, env(nil), io.Discard)
		if err == nil || !strings.Contains(err.Error(), args[0]) || strings.Contains(err.Error(), "\n") {
			t.Errorf("parseConfig(%q) = %v; want one line naming %s", args, err, args[0])
		}
	}
}

// Ensure run answers datagrams on --listen-udp next to TCP and publishes
// the open flow's event (network.transport udp) at shutdown, before the
// publisher is closed.
func TestRunUDP(t *testing.T) {
	cfg, err := parseConfig([]string{"--listen", "127.0.0.1:0", "--admin", "", "--listen-udp", "127.0.0.1:0"}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	addrs := make(chan net.Addr, 1)
	cfg.readyUDP = func(a net.Addr) { addrs <- a }
	var stdout, stderr syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, &stdout, &stderr) }()
	var ua net.Addr
	select {
	case ua = <-addrs:
	case err := <-done:
		t.Fatalf("run: %v\n%s", err, stderr.String())
	case <-time.After(60 * time.Second):
		t.Fatal("no UDP listener")
	}
	c, err := net.Dial("udp", ua.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	d := append([]byte("probe one\n"), make([]byte, 400)...)
	c.Write(d)
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	line, _, _ := strings.Cut(string(buf[:n]), "\n")
	r, err := report.ParseLine(line)
	if err != nil || r[report.KeyClient] != c.LocalAddr().String() || r[report.KeyProbe] != "probe one" {
		t.Fatalf("reply %q: %v", buf[:n], err)
	}
	stopRun(t, cancel, done)
	evs := parseEvents(t, stdout.String())
	if len(evs) != 1 || evs[0].Network.Transport != event.TransportUDP || evs[0].Event.ID != r[report.KeyConn] ||
		evs[0].Flow.End != "shutdown" || evs[0].Source.Bytes != int64(len(d)) || evs[0].Destination.Bytes != int64(n) {
		t.Errorf("events %+v; want the UDP flow of conn %s", evs, r[report.KeyConn])
	}
}

// Ensure UDP flow events reach Kafka: the built binary with --listen-udp and
// a broker (kfake) answers datagrams from several sockets and, on SIGTERM,
// publishes every open flow before it flushes the producer: one record per
// flow on the topic, keyed by the client, with the datagram counts.
func TestKafkaUDPFlows(t *testing.T) {
	c := kafkaCluster(t, 0)
	addr := c.ListenAddrs()[0]
	probe, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	udpAddr := probe.LocalAddr().String()
	probe.Close()
	cmd, _, _, _, stderr := startBinary(t, "--kafka-brokers", addr, "--spool-dir", t.TempDir(), "--kafka-linger", "10ms", "--listen-udp", udpAddr)
	const sockets, each = 5, 3
	sent := map[uint16]int64{}
	for range sockets {
		s, err := net.Dial("udp", udpAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		port := uint16(s.LocalAddr().(*net.UDPAddr).Port)
		for i := range each {
			d := append([]byte(fmt.Sprintf("probe %d\n", i)), make([]byte, 400)...)
			s.Write(d)
			s.SetReadDeadline(time.Now().Add(30 * time.Second))
			if _, err := s.Read(make([]byte, 4096)); err != nil {
				t.Fatalf("no reply: %v\n%s", err, stderr.String())
			}
			sent[port] += int64(len(d))
		}
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("app exit after SIGTERM: %v\n%s", err, stderr.String())
	}
	evs := kafkaEvents(t, addr)
	if len(evs) != sockets {
		t.Fatalf("%d events on the topic, want %d (one per flow)", len(evs), sockets)
	}
	for _, ev := range evs {
		if ev.Network.Transport != event.TransportUDP || ev.Source.Packets != each || ev.Source.Bytes != sent[ev.Source.Port] || ev.Flow.End != "shutdown" {
			t.Errorf("flow event %s:%d transport %s packets %d bytes %d end %q; want udp, %d, %d, shutdown",
				ev.Source.IP, ev.Source.Port, ev.Network.Transport, ev.Source.Packets, ev.Source.Bytes, ev.Flow.End, each, sent[ev.Source.Port])
		}
	}
}

// Ensure --udp-max-flows-per-ip and --limit-prefix-v4 reach the UDP server:
// with a cap of 1 per /24, a socket on 127.0.0.1 gets its reply, one on
// 127.0.0.2 (the same /24) none, counted as flow-limit on /metrics, and
// only the first flow has an event.
func TestRunUDPFlowsPerIP(t *testing.T) {
	cfg, err := parseConfig([]string{"--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--listen-udp", "127.0.0.1:0",
		"--udp-max-flows-per-ip", "1", "--limit-prefix-v4", "24"}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	addrs, admins := make(chan net.Addr, 1), make(chan net.Addr, 1)
	cfg.readyUDP = func(a net.Addr) { addrs <- a }
	cfg.ready = func(_, admin net.Addr) { admins <- admin }
	var stdout, stderr syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, &stdout, &stderr) }()
	var ua, admin net.Addr
	for ua == nil || admin == nil {
		select {
		case ua = <-addrs:
		case admin = <-admins:
		case err := <-done:
			t.Fatalf("run: %v\n%s", err, stderr.String())
		case <-time.After(60 * time.Second):
			t.Fatal("not serving")
		}
	}
	send := func(src string) ([]byte, bool) {
		c, err := net.DialUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(src+":0")), ua.(*net.UDPAddr))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write(append([]byte("probe\n"), make([]byte, 400)...))
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		if src != "127.0.0.1" {
			// Refused: wait for the count, then for a reply that must not come.
			deadline := time.Now().Add(30 * time.Second)
			for {
				_, body := adminGet(t, admin.String(), "/metrics")
				if metricValue(body, `originlens_udp_datagrams_total{result="flow-limit"}`) == 1 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("no flow-limit count on /metrics")
				}
				time.Sleep(10 * time.Millisecond)
			}
			c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		}
		buf := make([]byte, 4096)
		n, err := c.Read(buf)
		return buf[:n], err == nil
	}
	if _, ok := send("127.0.0.1"); !ok {
		t.Fatal("first source: no reply")
	}
	if reply, ok := send("127.0.0.2"); ok {
		t.Errorf("second flow of the /24 answered: %q", reply)
	}
	stopRun(t, cancel, done)
	if evs := parseEvents(t, stdout.String()); len(evs) != 1 || evs[0].Source.IP.String() != "127.0.0.1" {
		t.Errorf("%d events %+v; want the first source's flow only", len(evs), evs)
	}
}

// Ensure the binary exits 2 with one line naming the flag for a bad
// --udp-max-flows-per-ip.
func TestBinaryUDPFlowsPerIPError(t *testing.T) {
	flagenvtest.CheckBinary(t, appBinary(t), command, appTopics, nil, []string{"--listen", "127.0.0.1:0", "--udp-max-flows-per-ip", "0"},
		"app: --udp-max-flows-per-ip 0: must be at least 1, got 0 (e.g. --udp-max-flows-per-ip 64)\n")
}

// stopRun cancels run and waits for it to return nil.
func stopRun(t *testing.T, cancel context.CancelFunc, done <-chan error) {
	t.Helper()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run = %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("run did not return")
	}
}
