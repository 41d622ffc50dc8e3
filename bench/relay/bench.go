package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// benchConfig is the command line.
type benchConfig struct {
	App, HAProxy, Nginx, Modules string
	Rounds, Concurrency, Streams int
	Sources                      int
	Duration                     time.Duration
	Bulk                         int64
	Out                          string
}

// relayUnderTest is one relay: where it listens in the server namespace.
type relayUnderTest struct {
	Name, Addr string
}

var relays = []relayUnderTest{
	{"app", serverIP + ":8001"},
	{"haproxy", serverIP + ":8002"},
	{"nginx", serverIP + ":8003"},
	{"go-floor", serverIP + ":8004"},
	{"direct", direct},
}

func runBench(args []string) error {
	fs := flag.NewFlagSet("bench-relay", flag.ContinueOnError)
	var c benchConfig
	fs.StringVar(&c.App, "app", "bin/app", "the app binary (make build)")
	fs.StringVar(&c.HAProxy, "haproxy", "haproxy", "the haproxy binary")
	fs.StringVar(&c.Nginx, "nginx", "nginx", "the nginx binary")
	fs.StringVar(&c.Modules, "modules", "/usr/lib/nginx/modules", "directory of ngx_stream_module.so")
	fs.IntVar(&c.Rounds, "rounds", 2, "rounds; each measures every relay once per workload")
	fs.DurationVar(&c.Duration, "duration", 5*time.Second, "load time per relay, workload and round")
	fs.IntVar(&c.Concurrency, "concurrency", 32, "conn/s: connections in flight")
	fs.IntVar(&c.Streams, "streams", 4, "bulk: parallel connections")
	fs.Int64Var(&c.Bulk, "bulk", 1<<30, "bulk: most bytes per connection (with -duration, whichever comes first)")
	fs.IntVar(&c.Sources, "sources", 32, fmt.Sprintf("client source addresses the generator dials from in turn (%s and the ones after it, at most %d); 1 fills one address's ports with TIME_WAIT and makes connect() search them", clientIP, maxSources))
	fs.StringVar(&c.Out, "o", "", "also write the Markdown results to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if c.Rounds < 1 || c.Rounds > 20 || c.Duration <= 0 || c.Duration > 5*time.Minute || c.Concurrency < 1 || c.Concurrency > 1024 || c.Streams < 1 || c.Streams > 64 || c.Sources < 1 || c.Sources > maxSources {
		return fmt.Errorf("-rounds 1..20, -duration up to 5m, -concurrency 1..1024, -streams 1..64, -sources 1..%d", maxSources)
	}
	if os.Geteuid() != 0 {
		return errors.New("needs root: it creates two network namespaces and transparent sockets (sudo make bench-relay)")
	}
	var err error
	for _, p := range []*string{&c.HAProxy, &c.Nginx} {
		if *p, err = exec.LookPath(*p); err != nil {
			return fmt.Errorf("%w (apt-get install haproxy nginx-light libnginx-mod-stream)", err)
		}
	}
	if c.App, err = filepath.Abs(c.App); err != nil {
		return err
	}
	if _, err := os.Stat(c.App); err != nil {
		return fmt.Errorf("app binary: %w (run make build, or pass -app)", err)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "bench-relay-")
	if err != nil {
		return err
	}

	ns := &namespaces{tag: fmt.Sprintf("%d", os.Getpid()%100000), sources: c.Sources}
	var mu sync.Mutex
	var procs []*exec.Cmd
	pids := map[string]int{} // relay name -> its process (ip netns exec execs it)
	cleanup := func() {
		mu.Lock()
		defer mu.Unlock()
		for _, p := range procs {
			p.Process.Kill()
			p.Wait()
		}
		procs = nil
		ns.delete()
		os.RemoveAll(dir)
	}
	defer cleanup()
	// A signal (or make's timeout) still removes the namespaces.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sig)
	go func() {
		if _, ok := <-sig; ok {
			cleanup()
			os.Exit(1)
		}
	}()
	if err := ns.create(); err != nil {
		return err
	}
	start := func(name string, env []string, args ...string) error {
		cmd := exec.Command("ip", append([]string{"netns", "exec", ns.name("srv")}, args...)...)
		logf, err := os.Create(filepath.Join(dir, name+".log"))
		if err != nil {
			return err
		}
		// Files, not io.Writers: Wait would wait for a pipe that nginx's
		// worker keeps open.
		cmd.Stdout, cmd.Stderr, cmd.Env = logf, logf, append(os.Environ(), env...)
		if name == "app" {
			cmd.Stdout = nil // the events, as JSON lines: /dev/null
		}
		mu.Lock()
		defer mu.Unlock()
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("starting %s: %w", name, err)
		}
		procs = append(procs, cmd)
		pids[name] = cmd.Process.Pid
		return nil
	}
	if err := start("upstream", nil, self, "upstream", upstream, direct); err != nil {
		return err
	}
	hcfg := filepath.Join(dir, "haproxy.cfg")
	os.WriteFile(hcfg, []byte(fmt.Sprintf(`global
    nbthread 1
    maxconn 4000
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend relay
    bind %s
    default_backend up
backend up
    source 0.0.0.0 usesrc clientip
    server u1 %s
`, relays[1].Addr, upstream)), 0o644)
	ncfg := filepath.Join(dir, "nginx.conf")
	os.WriteFile(ncfg, []byte(fmt.Sprintf(`load_module %s/ngx_stream_module.so;
daemon off;
worker_processes 1;
pid %s/nginx.pid;
error_log %s/nginx-error.log warn;
events { worker_connections 4000; }
stream {
    server {
        listen %s;
        proxy_bind $remote_addr transparent;
        proxy_half_close on;
        proxy_pass %s;
    }
}
`, c.Modules, dir, dir, relays[2].Addr, upstream)), 0o644)
	if err := start("app", []string{"GOMAXPROCS=1"}, c.App, "--listen", relays[0].Addr, "--admin", "",
		"--upstream", upstream, "--proxy-protocol", "off", "--log-level", "warn"); err != nil {
		return err
	}
	if err := start("go-floor", []string{"GOMAXPROCS=1"}, self, "go-floor", relays[3].Addr, upstream); err != nil {
		return err
	}
	if err := start("haproxy", nil, c.HAProxy, "-db", "-f", hcfg); err != nil {
		return err
	}
	if err := start("nginx", nil, c.Nginx, "-c", ncfg, "-p", dir); err != nil {
		return err
	}
	for _, r := range relays {
		if err := ns.waitListen(r.Addr); err != nil {
			logs, _ := os.ReadFile(filepath.Join(dir, r.Name+".log"))
			return fmt.Errorf("%s: %w\n%s", r.Name, err, logs)
		}
	}

	type sums struct{ conns, bytes, secs, cpu float64 }
	results := map[string]map[string]*sums{"conn": {}, "bulk": {}}
	for round := 1; round <= c.Rounds; round++ {
		for _, mode := range []string{"conn", "bulk"} {
			for i := range relays {
				r := relays[(i+round)%len(relays)] // rotate who goes first
				cpu0, _ := treeCPU(pids[r.Name])
				res, err := ns.load(self, r.Addr, mode, c)
				cpu1, cerr := treeCPU(pids[r.Name])
				if err == nil && cerr != nil && r.Name != "direct" {
					err = fmt.Errorf("reading its CPU time: %w", cerr)
				}
				if err != nil {
					return fmt.Errorf("%s %s: %w", r.Name, mode, err)
				}
				if res.Failed > 0 {
					return fmt.Errorf("%s %s: %d of %d connections failed; first: %s", r.Name, mode, res.Failed, res.Failed+res.Conns, res.Err)
				}
				s := results[mode][r.Name]
				if s == nil {
					s = &sums{}
					results[mode][r.Name] = s
				}
				s.conns += float64(res.Conns)
				s.bytes += float64(res.Bytes)
				s.secs += res.Seconds
				s.cpu += (cpu1 - cpu0).Seconds()
				v := float64(res.Conns) / res.Seconds
				unit := "conn/s"
				if mode == "bulk" {
					v, unit = float64(res.Bytes)/res.Seconds/1e6, "MB/s each way"
				}
				fmt.Fprintf(os.Stderr, "round %d %-5s %-8s %10.1f %s, relay CPU %.2f s\n", round, mode, r.Name, v, unit, (cpu1 - cpu0).Seconds())
			}
		}
	}
	var md bytes.Buffer
	fmt.Fprintf(&md, "| relay | conn/s | CPU µs/conn | bulk MB/s (each way) | CPU s/GB | conn/s: app ÷ it | CPU/conn: it ÷ app | bulk: app ÷ it | CPU/GB: it ÷ app |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	// CPU per connection (µs) and per GB moved each way (s).
	cpuConn := func(n string) float64 { s := results["conn"][n]; return s.cpu / s.conns * 1e6 }
	cpuGB := func(n string) float64 { s := results["bulk"][n]; return s.cpu / (s.bytes / 1e9) }
	appC := results["conn"]["app"].conns / results["conn"]["app"].secs
	appB := results["bulk"]["app"].bytes / results["bulk"]["app"].secs / 1e6
	for _, r := range relays {
		cs := results["conn"][r.Name].conns / results["conn"][r.Name].secs
		bs := results["bulk"][r.Name].bytes / results["bulk"][r.Name].secs / 1e6
		if r.Name == "direct" { // no relay process
			fmt.Fprintf(&md, "| %s | %.0f | - | %.0f | - | %.2fx | - | %.2fx | - |\n", r.Name, cs, bs, appC/cs, appB/bs)
			continue
		}
		fmt.Fprintf(&md, "| %s | %.0f | %.1f | %.0f | %.2f | %.2fx | %.2fx | %.2fx | %.2fx |\n", r.Name, cs, cpuConn(r.Name), bs, cpuGB(r.Name),
			appC/cs, cpuConn(r.Name)/cpuConn("app"), appB/bs, cpuGB(r.Name)/cpuGB("app"))
	}
	fmt.Fprintf(&md, "\n%d rounds x %s per relay and workload, conn/s at concurrency %d from %d source addresses, bulk with %d streams of up to %d MiB; CPU is the relay's processes' utime+stime (/proc, clock ticks) over its rounds; ratios above 1 favour the app; the upstream saw each connection's own client address through every relay.\n",
		c.Rounds, c.Duration, c.Concurrency, c.Sources, c.Streams, c.Bulk>>20)
	os.Stdout.Write(md.Bytes())
	if c.Out != "" {
		return os.WriteFile(c.Out, md.Bytes(), 0o644)
	}
	return nil
}

// namespaces is the benchmark's client and server namespaces.
type namespaces struct {
	tag     string
	sources int // client addresses: clientIP and the sources-1 after it
}

func (n *namespaces) name(role string) string { return "olbr" + n.tag + "-" + role }

func (n *namespaces) ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// create makes cli (198.51.100.10 and the other sources) and srv
// (198.51.100.1) joined by a veth pair, with the relay routing in srv.
func (n *namespaces) create() error {
	cli, srv := n.name("cli"), n.name("srv")
	steps := [][]string{
		{"netns", "add", cli}, {"netns", "add", srv},
		{"-n", cli, "link", "set", "lo", "up"}, {"-n", srv, "link", "set", "lo", "up"},
		{"link", "add", "brc" + n.tag, "netns", cli, "type", "veth", "peer", "name", "brs" + n.tag, "netns", srv},
		{"-n", cli, "addr", "add", clientIP + "/24", "dev", "brc" + n.tag},
		{"-n", srv, "addr", "add", serverIP + "/24", "dev", "brs" + n.tag},
		{"-n", cli, "link", "set", "brc" + n.tag, "up"}, {"-n", srv, "link", "set", "brs" + n.tag, "up"},
		{"-n", srv, "rule", "add", "from", "127.0.0.1/8", "iif", "lo", "table", "123"},
		{"-n", srv, "route", "add", "local", "0.0.0.0/0", "dev", "lo", "table", "123"},
		{"-n", srv, "-6", "rule", "add", "from", "::1/128", "iif", "lo", "table", "123"},
		{"-n", srv, "-6", "route", "add", "local", "::/0", "dev", "lo", "table", "123"},
	}
	for _, a := range sourceAddrs(n.sources)[1:] {
		steps = append(steps, []string{"-n", cli, "addr", "add", a.String() + "/32", "dev", "brc" + n.tag})
	}
	for _, s := range steps {
		if err := n.ip(s...); err != nil {
			return err
		}
	}
	return nil
}

func (n *namespaces) delete() {
	exec.Command("ip", "netns", "del", n.name("cli")).Run()
	exec.Command("ip", "netns", "del", n.name("srv")).Run()
}

// waitListen waits up to 30 s until addr accepts from the client namespace.
func (n *namespaces) waitListen(addr string) error {
	_, port, _ := net.SplitHostPort(addr)
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		out, _ := exec.Command("ip", "netns", "exec", n.name("srv"), "ss", "-Hltn", "sport = :"+port).Output()
		if len(bytes.TrimSpace(out)) > 0 {
			return nil
		}
	}
	return fmt.Errorf("nothing listens on %s after 30s", addr)
}

// load runs the generator in the client namespace and returns its result.
func (n *namespaces) load(self, target, mode string, c benchConfig) (loadResult, error) {
	cmd := exec.Command("ip", "netns", "exec", n.name("cli"), self, "load", "-target", target, "-mode", mode,
		"-duration", c.Duration.String(), "-concurrency", fmt.Sprint(c.Concurrency),
		"-streams", fmt.Sprint(c.Streams), "-bulk", fmt.Sprint(c.Bulk), "-sources", fmt.Sprint(c.Sources))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return loadResult{}, fmt.Errorf("%v: %s", err, stderr.String())
	}
	var r loadResult
	if err := json.Unmarshal(out, &r); err != nil {
		return loadResult{}, fmt.Errorf("generator output %q: %w", out, err)
	}
	return r, nil
}

// treeCPU returns the user and system CPU time of pid and its descendants
// (nginx's and HAProxy's workers), from /proc/PID/stat.
func treeCPU(pid int) (time.Duration, error) {
	if pid == 0 {
		return 0, errors.New("no process")
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command (which may hold spaces), from field 3 on.
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	var ticks int64
	for _, x := range f[11:13] { // utime, stime: fields 14 and 15
		v, err := strconv.ParseInt(x, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		ticks += v
	}
	total := time.Duration(ticks) * time.Second / clkTck
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, t := range tasks {
		b, _ := os.ReadFile(t)
		for _, c := range strings.Fields(string(b)) {
			if cp, err := strconv.Atoi(c); err == nil {
				if d, err := treeCPU(cp); err == nil {
					total += d
				}
			}
		}
	}
	return total, nil
}

// clkTck is USER_HZ, the unit of /proc/PID/stat's times: 100 on Linux.
const clkTck = 100
