package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
)

func TestParseStat(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    procStat
		wantErr bool
	}{
		{"plain", "4242 (nginx) S 4241 4241 4241 0 -1 4194624 300 0 0 0 150 75 0 0 20 0 1 0 100 1000 200",
			procStat{PPID: 4241, CPU: 225 * clockTick}, false},
		// The command name may hold spaces and parentheses.
		{"tricky_comm", "7 (a) b (c)) R 1 7 7 0 -1 0 0 0 0 0 3 4 0 0 20 0 1 0 1 1 1",
			procStat{PPID: 1, CPU: 7 * clockTick}, false},
		{"no_comm", "7 a R 1 7", procStat{}, true},
		{"short", "7 (a) R 1 7 7", procStat{}, true},
		{"bad_utime", "7 (a) R 1 7 7 0 -1 0 0 0 0 0 x 4 0", procStat{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStat([]byte(tt.in))
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("parseStat(%q) = %+v, %v; want %+v, error %v", tt.in, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestParseStatus(t *testing.T) {
	in := "Name:\tapp\nVmPeak:\t  900 kB\nVmHWM:\t   70000 kB\nVmRSS:\t   26000 kB\nThreads:\t5\n"
	got, err := parseStatus([]byte(in))
	want := procMem{RSS: 26000 << 10, Peak: 70000 << 10}
	if err != nil || got != want {
		t.Errorf("parseStatus = %+v, %v; want %+v", got, err, want)
	}
	for _, bad := range []string{"Name:\tx\nVmRSS:\t1 kB\n", "VmRSS:\t1 MB\nVmHWM:\t2 kB\n", "VmRSS:\tx kB\nVmHWM:\t2 kB\n"} {
		if got, err := parseStatus([]byte(bad)); err == nil {
			t.Errorf("parseStatus(%q) = %+v, nil; want an error", bad, got)
		}
	}
}

func TestParseGoMem(t *testing.T) {
	in := "# HELP go_memstats_heap_inuse_bytes x\n# TYPE go_memstats_heap_inuse_bytes gauge\n" +
		"go_memstats_heap_inuse_bytes 6.9e+07\ngo_memstats_stack_inuse_bytes 524288\ngo_goroutines 12\n"
	heap, stack, err := parseGoMem(strings.NewReader(in))
	if err != nil || heap != 69_000_000 || stack != 524288 {
		t.Errorf("parseGoMem = %d, %d, %v; want 69000000, 524288, nil", heap, stack, err)
	}
	if _, _, err := parseGoMem(strings.NewReader("go_goroutines 1\n")); err == nil {
		t.Error("parseGoMem without the metrics: no error")
	}
}

func TestSampleMath(t *testing.T) {
	s := sample{OK: 20000, Wall: 4 * time.Second, CPU: 2 * time.Second, GenCPU: time.Second}
	if got := s.ConnsPerSec(); got != 5000 {
		t.Errorf("ConnsPerSec = %v, want 5000", got)
	}
	if got := s.CPUPer10k(); got != 1 {
		t.Errorf("CPUPer10k = %v, want 1", got)
	}
	if got := s.Util(); got != 0.5 {
		t.Errorf("Util = %v, want 0.5", got)
	}
	if got := (sample{}).CPUPer10k(); got != 0 {
		t.Errorf("zero sample CPUPer10k = %v, want 0", got)
	}
	for _, tt := range []struct {
		in   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{5, 1, 3}, 3}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := median(tt.in); got != tt.want {
			t.Errorf("median(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestSummarizeAndGoals(t *testing.T) {
	ss := []sample{
		{Server: "nginx", OK: 1000, Wall: time.Second, P99: 2 * time.Millisecond, PeakRSS: 5 << 20},
		{Server: "app", OK: 1200, Wall: time.Second, P99: 3 * time.Millisecond, PeakRSS: 60 << 20},
		{Server: "app", OK: 900, Wall: time.Second, P99: time.Millisecond, PeakRSS: 70 << 20},
		{Server: "app", OK: 1500, Wall: time.Second, P99: 2 * time.Millisecond, PeakRSS: 65 << 20},
	}
	a, n := summarize("app", ss), summarize("nginx", ss)
	if a.ConnPerSec != 1200 || a.P99 != 2 || a.PeakRSS != 70<<20 || a.OK != 3600 {
		t.Errorf("summarize(app) = %+v; want 1200 conn/s, p99 2 ms, peak 70 MiB, 3600 ok", a)
	}
	if a.BestCPS != 1500 {
		t.Errorf("summarize(app).BestCPS = %v, want 1500", a.BestCPS)
	}
	a.Util, n.Util = 0.95, 0.99
	g := throughputGoals(a, n)
	if len(g) != 4 || !g[0].Met || !g[1].Met || g[0].Inconclusive || g[1].Inconclusive {
		t.Errorf("throughputGoals = %v; want both met (1.2x, 2 ms <= 2 ms), saturated", g)
	}
	a.P99 = 2.5
	if g := throughputGoals(a, n); g[1].Met {
		t.Errorf("throughputGoals with a worse p99 = %v; want the p99 goal not met", g)
	}
	// Unsaturated servers: the goal line says so and gives the CPU ratio.
	a.CPUPer10k, n.CPUPer10k, a.Util, n.Util = 1.0, 0.4, 0.3, 0.2
	g = throughputGoals(a, n)
	if got := g[0].Result; !strings.Contains(got, "not saturated") || !strings.Contains(got, "0.40x") {
		t.Errorf("throughputGoals unsaturated result = %q; want a note and 0.40x per CPU-second", got)
	}
	if !g[0].Inconclusive || !g[1].Inconclusive || !strings.Contains(g[0].String(), "INCONCLUSIVE") {
		t.Errorf("throughputGoals unsaturated = %v; want both inconclusive", g)
	}
	if got := a.PerCPUSecond(); got != 10000 {
		t.Errorf("PerCPUSecond = %v, want 10000", got)
	}
}

func TestTable(t *testing.T) {
	var b bytes.Buffer
	table(&b, []string{"a", "bb"}, [][]string{{"ccc", "d"}})
	want := "| a   | bb |\n| --- | -- |\n| ccc | d  |\n"
	if b.String() != want {
		t.Errorf("table =\n%s\nwant\n%s", b.String(), want)
	}
}

func TestNewClients(t *testing.T) {
	cs, err := newClients(600, benchNets, headerDst)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for i, c := range cs {
		h, err := proxyproto.Read(bufio.NewReader(bytes.NewReader(c.hello)))
		if err != nil {
			t.Fatalf("client %d: reading back its PROXY header: %v", i, err)
		}
		src := h.SourceAddr.(*net.TCPAddr).AddrPort()
		if src != c.src || h.Version != 2 {
			t.Errorf("client %d: header source %s v%d, want %s v2", i, src, h.Version, c.src)
		}
		g := benchNets[i%len(benchNets)]
		if !g.Prefix.Contains(c.src.Addr()) || c.country != g.Country {
			t.Errorf("client %d: %s (%s) outside %s (%s)", i, c.src, c.country, g.Prefix, g.Country)
		}
		if !bytes.HasSuffix(c.hello, []byte(firstLine)) || bytes.Count(c.hello, []byte("\n")) < 1 {
			t.Errorf("client %d: hello %q; want the header, then the first line", i, c.hello)
		}
		seen[c.src.String()] = true
	}
	if len(seen) != len(cs) {
		t.Errorf("%d distinct sources for %d clients", len(seen), len(cs))
	}
}

func TestCheckReply(t *testing.T) {
	cs, err := newClients(1, benchNets, headerDst)
	if err != nil {
		t.Fatal(err)
	}
	c := &cs[0] // 192.0.2.1:20000, US
	good := "client=192.0.2.1:20000 via=proxy-v2 peer=127.0.0.1:5 server=203.0.113.254:80 conn=7 country=US decision=serve"
	tests := []struct {
		name string
		line string
		full bool
		ok   bool
	}{
		{"prefix_only", good, false, true},
		{"full", good, true, true},
		{"wrong_client", strings.Replace(good, "192.0.2.1:", "192.0.2.2:", 1), false, false},
		{"direct_not_proxy", strings.Replace(good, "proxy-v2", "direct", 1), false, false},
		{"wrong_country", strings.Replace(good, "country=US", "country=JP", 1), true, false},
		{"deny", strings.Replace(good, "decision=serve", "decision=deny", 1), true, false},
		{"malformed", good + " =x", true, false},
		{"missing_conn", strings.Replace(good, " conn=7", "", 1), true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkReply([]byte(tt.line), c, tt.full)
			if (err == nil) != tt.ok {
				t.Errorf("checkReply(%q, full=%v) = %v; want ok=%v", tt.line, tt.full, err, tt.ok)
			}
			if err != nil && !errors.Is(err, errBadReply) {
				t.Errorf("checkReply error %v does not wrap errBadReply", err)
			}
		})
	}
}

// TestNginxPeer runs the real peer with the generated configuration and
// database and checks its replies and a short load run.
func TestNginxPeer(t *testing.T) {
	const modDir = "/usr/lib/nginx/modules"
	bin, err := checkNginx("nginx", modDir)
	if err != nil {
		t.Skipf("skipping: %v", err)
	}
	if _, err := exec.LookPath(bin); err != nil {
		t.Skipf("skipping: %v", err)
	}
	dir := t.TempDir()
	db := filepath.Join(dir, "city.mmdb")
	if err := writeCityDB(db); err != nil {
		t.Fatal(err)
	}
	cs, err := newClients(64, benchNets, headerDst)
	if err != nil {
		t.Fatal(err)
	}
	for _, tuned := range []bool{false, true} { // nginx, nginx-tuned (reuseport, multi_accept)
		sub := filepath.Join(dir, fmt.Sprint(tuned))
		if err := os.Mkdir(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		p, err := startNginx(ctx, bin, modDir, sub, db, 256, tuned, nil, &cs[0])
		if err != nil {
			t.Fatal(err)
		}
		defer p.stop(5 * time.Second)
		res := runLoad(ctx, loadConfig{
			// MaxConns ends the run; Duration and Timeout only bound it on a
			// busy machine.
			Target: p.addr, Clients: cs, Concurrency: 4, Duration: 90 * time.Second,
			MaxConns: 200, Timeout: 20 * time.Second, CheckEvery: 1, ReplyLines: p.lines,
		})
		if res.OK != 200 || res.Failed != 0 {
			t.Errorf("runLoad against nginx: %d ok, %d failed (%v); want 200 ok", res.OK, res.Failed, res.Errs)
		}
		if got := res.Latency.TotalCount(); got != res.OK {
			t.Errorf("latency samples = %d, want %d", got, res.OK)
		}
		if st, err := readStat(p.pid); err != nil || st.PPID != p.cmd.Process.Pid {
			t.Errorf("worker %d: stat %+v, %v; want the master %d as parent", p.pid, st, err, p.cmd.Process.Pid)
		}
	}
}

// TestDialSpreadsSources: with -sources n the generator's connections come
// from 127.0.0.1..n in turn, so that client TIME_WAITs do not pile up on one
// address; with 1 they all come from the default source.
func TestDialSpreadsSources(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	raddr := ln.Addr().(*net.TCPAddr)
	defer dialSources.Store(dialSources.Load())
	for _, n := range []int64{1, 4} {
		dialSources.Store(n)
		seen := map[string]bool{}
		for range 8 {
			c, err := dial(raddr, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			s, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			seen[s.RemoteAddr().(*net.TCPAddr).IP.String()] = true
			s.Close()
			c.Close()
		}
		if len(seen) != int(n) {
			t.Errorf("-sources %d: connections came from %v, want %d addresses", n, seen, n)
		}
	}
}
