// Command peer benchmarks the app against the peer a user would pick
// instead of it: nginx's stream module with PROXY protocol and the geoip2
// module, answering one line with the same fields as the app's report.
//
// It starts, on loopback and in a temporary directory, a kfake Kafka broker
// (this program re-executed as "peer broker"), nginx with one worker and
// bin/app with GOMAXPROCS=1, both servers pinned to the same one CPU and the
// load generator and broker to the others; it builds the City database both
// servers read with internal/mmdb. Then it runs closed-loop load (PROXY v2
// header + one line, read the reply line, close) against one server then the
// other for several rounds, prints per round and in summary connections/s,
// reply latency p50/p99, server CPU seconds per 10,000 connections and peak
// RSS with the ratio app/nginx, checks that the app's events reached Kafka,
// and measures the app's memory per idle open connection.
//
// It installs nothing: without nginx or its modules it says what to install
// and exits 1. `make bench-peer` runs it (scripts/bench-peer.sh); see
// BENCHMARKS.md for the method and results.
//
//	go run ./bench/peer -rounds 5 -duration 30s -concurrency 64
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// config is the command line.
type config struct {
	App, Nginx, Modules string
	Rounds              int
	Duration, Warmup    time.Duration
	Timeout             time.Duration
	Concurrency         int
	MaxConns            int64
	Idle                int
	Pin                 bool
	Perf                string
	Keep                bool
	CheckEvery          int
	Tuned               bool
	Sources             int
	IdleWait            time.Duration
	OnlyIdle            bool
	Out                 string
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "broker" {
		if err := runBroker(); err != nil {
			fmt.Fprintln(os.Stderr, "bench-peer broker:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 2 && os.Args[1] == "citydb" { // the benchmark's database, for scripts/conn-cost.sh
		if err := writeCityDB(os.Args[2]); err != nil {
			fmt.Fprintln(os.Stderr, "bench-peer citydb:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "load" {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		err := runLoadCmd(ctx, os.Args[2:], os.Stdout, os.Stderr)
		stop()
		if err != nil && !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "bench-peer load:", err)
			os.Exit(1)
		}
		return
	}
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-peer:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "bench-peer:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	fs := flag.NewFlagSet("bench-peer", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c config
	fs.StringVar(&c.App, "app", "bin/app", "the app binary (make build)")
	fs.StringVar(&c.Nginx, "nginx", "nginx", "the nginx binary")
	fs.StringVar(&c.Modules, "modules", "/usr/lib/nginx/modules", "directory of ngx_stream_module.so and ngx_stream_geoip2_module.so")
	fs.IntVar(&c.Rounds, "rounds", 3, "rounds; each runs both servers, alternating which goes first")
	fs.DurationVar(&c.Duration, "duration", 10*time.Second, "load time per server and round")
	fs.DurationVar(&c.Warmup, "warmup", 2*time.Second, "unmeasured load per server before the first round")
	fs.DurationVar(&c.Timeout, "timeout", 5*time.Second, "per-connection deadline")
	fs.IntVar(&c.Concurrency, "concurrency", 32, "connections in flight")
	fs.Int64Var(&c.MaxConns, "max-conns", 5_000_000, "most connections per server and round (with -duration, whichever comes first)")
	fs.IntVar(&c.Idle, "idle", 10000, "idle connections for the memory measurement; 0 skips it")
	fs.DurationVar(&c.IdleWait, "idle-wait", 2*time.Second, "how long the idle connections stay open before the app's memory is read (over 2m: the runtime's periodic GC has run, which shrinks idle goroutine stacks)")
	fs.BoolVar(&c.OnlyIdle, "only-idle", false, "run only the idle-connection memory measurement (app and default nginx), not the rounds")
	fs.BoolVar(&c.Tuned, "tuned", true, "also run nginx with listen ... reuseport and multi_accept on (nginx-tuned) and report the app against both")
	fs.IntVar(&c.Sources, "sources", 32, "loopback source addresses the generator dials from (127.0.0.1..N, at most 254); 1 puts every client TIME_WAIT on one address and makes connect() search for a free port")
	fs.BoolVar(&c.Pin, "pin", true, "pin both servers to the last allowed CPU and the generator and broker to the others")
	fs.StringVar(&c.Perf, "perf", "", "after the rounds, record a perf profile of the app under load into this file (needs perf and an unstripped -app)")
	fs.BoolVar(&c.Keep, "keep", false, "keep the temporary directory (configs, logs, database)")
	fs.IntVar(&c.CheckEvery, "check-every", 100, "fully parse every Nth reply as a report (every reply's client= is checked)")
	fs.StringVar(&c.Out, "o", "", "also write the Markdown results to this file")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	switch {
	case c.Rounds < 1:
		return config{}, errors.New("-rounds must be at least 1")
	case c.Duration <= 0 || c.Timeout <= 0 || c.Warmup < 0:
		return config{}, errors.New("-duration and -timeout must be positive, -warmup not negative")
	case c.Concurrency < 1 || c.Concurrency > 4096:
		return config{}, errors.New("-concurrency must be 1..4096")
	case c.MaxConns < 1:
		return config{}, errors.New("-max-conns must be positive")
	case c.Sources < 1 || c.Sources > 254:
		return config{}, errors.New("-sources must be 1..254")
	case c.Idle < 0:
		return config{}, errors.New("-idle must not be negative")
	case c.IdleWait <= 0 || c.IdleWait > 10*time.Minute:
		return config{}, errors.New("-idle-wait must be positive and at most 10m (the app's idle timeout here)")
	}
	return c, nil
}

// cpuPlan is where the processes run.
type cpuPlan struct {
	server, client *unix.CPUSet // nil: not pinned
	desc           string
}

func planCPUs(pin bool) (cpuPlan, error) {
	var all unix.CPUSet
	if err := unix.SchedGetaffinity(0, &all); err != nil {
		return cpuPlan{}, fmt.Errorf("reading CPU affinity: %w", err)
	}
	var ids []int
	for i := range 1024 {
		if all.IsSet(i) {
			ids = append(ids, i)
		}
	}
	if !pin || len(ids) < 2 {
		return cpuPlan{desc: fmt.Sprintf("not pinned (%d CPUs allowed)", len(ids))}, nil
	}
	var srv, cli unix.CPUSet
	srv.Set(ids[len(ids)-1])
	for _, id := range ids[:len(ids)-1] {
		cli.Set(id)
	}
	return cpuPlan{
		server: &srv, client: &cli,
		desc: fmt.Sprintf("servers on CPU %d, load generator and Kafka broker on CPU %s",
			ids[len(ids)-1], joinInts(ids[:len(ids)-1])),
	}, nil
}

func joinInts(xs []int) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = fmt.Sprint(x)
	}
	return strings.Join(s, ",")
}

// raiseNoFile raises the soft RLIMIT_NOFILE to the hard limit; the
// servers inherit it. It returns the new limit.
func raiseNoFile() (uint64, error) {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0, fmt.Errorf("reading RLIMIT_NOFILE: %w", err)
	}
	r.Cur = r.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0, fmt.Errorf("raising RLIMIT_NOFILE: %w", err)
	}
	return r.Cur, nil
}

// headerDst is the address every PROXY header says the client dialed (a
// load balancer's public address in production).
var headerDst = netip.MustParseAddrPort("203.0.113.254:80")

func run(ctx context.Context, cfg config, stdout, stderr io.Writer) error {
	nginxBin, err := checkNginx(cfg.Nginx, cfg.Modules)
	if err != nil {
		return err
	}
	appBin, err := filepath.Abs(cfg.App)
	if err != nil {
		return err
	}
	if _, err := os.Stat(appBin); err != nil {
		return fmt.Errorf("app binary: %w (run make build, or pass -app)", err)
	}
	dialSources.Store(int64(cfg.Sources))
	nofile, err := raiseNoFile()
	if err != nil {
		return err
	}
	if need := uint64(cfg.Idle + cfg.Concurrency + 256); cfg.Idle > 0 && nofile < need {
		return fmt.Errorf("RLIMIT_NOFILE hard limit %d is below the %d descriptors -idle %d needs; lower -idle or raise the limit", nofile, need, cfg.Idle)
	}
	cpus, err := planCPUs(cfg.Pin)
	if err != nil {
		return err
	}
	if cpus.client != nil {
		if err := pinSelf(cpus.client); err != nil {
			return err
		}
	}
	dir, err := os.MkdirTemp("", "bench-peer-")
	if err != nil {
		return err
	}
	if cfg.Keep {
		fmt.Fprintln(stderr, "bench-peer: keeping", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	db := filepath.Join(dir, "city.mmdb")
	if err := writeCityDB(db); err != nil {
		return err
	}
	clients, err := newClients(1024, benchNets, headerDst)
	if err != nil {
		return err
	}

	out := stdout
	if cfg.Out != "" {
		f, err := os.Create(cfg.Out)
		if err != nil {
			return err
		}
		defer f.Close()
		out = io.MultiWriter(stdout, f)
	}
	progress := func(format string, args ...any) { fmt.Fprintf(stderr, "bench-peer: "+format+"\n", args...) }

	brk, err := startBroker(cpus.client)
	if err != nil {
		return err
	}
	defer brk.stop()
	ngxConns := max(cfg.Idle, 1024) + cfg.Concurrency + 64
	ngx, err := startNginx(ctx, nginxBin, cfg.Modules, dir, db, ngxConns, false, cpus.server, &clients[0])
	if err != nil {
		return err
	}
	defer ngx.stop(5 * time.Second)
	peers := []*proc{ngx}
	if cfg.Tuned && !cfg.OnlyIdle {
		tdir := filepath.Join(dir, nginxTuned)
		if err := os.Mkdir(tdir, 0o755); err != nil {
			return err
		}
		tngx, err := startNginx(ctx, nginxBin, cfg.Modules, tdir, db, ngxConns, true, cpus.server, &clients[0])
		if err != nil {
			return err
		}
		defer tngx.stop(5 * time.Second)
		peers = append(peers, tngx)
	}
	appOpts := appOptions{bin: appBin, dir: dir, db: db, brokers: brk.addr, maxConns: cfg.Idle + cfg.Concurrency + 1000, idleTimeout: 60 * time.Second}
	if cfg.OnlyIdle {
		if cfg.Idle < 1 {
			return errors.New("-only-idle needs -idle of at least 1")
		}
		fmt.Fprintf(out, "## Idle-only run of %s (app %s)\n\n", time.Now().UTC().Format("2006-01-02 15:04 MST"), appBin)
		g, err := idleSection(ctx, out, cfg, appOpts, cpus, clients, ngx, progress)
		if err != nil {
			return err
		}
		writeGoals(out, []goal{g})
		return nil
	}
	app, err := startApp(ctx, appOpts, cpus.server, &clients[0])
	if err != nil {
		return err
	}
	appStopped := false
	defer func() {
		if !appStopped {
			_ = app.stop(20 * time.Second)
		}
	}()

	writeHeader(ctx, out, cfg, cpus, nginxBin, appBin, ngx, app)
	fmt.Fprintln(out, "Sample replies (PROXY source 192.0.2.1:20000):")
	fmt.Fprintln(out)
	servers := append(slices.Clone(peers), app)
	for _, p := range servers {
		fmt.Fprintf(out, "    %-11s %s\n", p.name, sampleReply(p, &clients[0]))
	}
	fmt.Fprintln(out)

	var appOK, appTried int64 = 2, 2 // the readiness probe and sampleReply
	load := func(p *proc, d time.Duration) loadResult {
		r := runLoad(ctx, loadConfig{
			Target: p.addr, Clients: clients, Concurrency: cfg.Concurrency,
			Duration: d, MaxConns: cfg.MaxConns, Timeout: cfg.Timeout, CheckEvery: cfg.CheckEvery,
			ReplyLines: p.lines,
		})
		if p == app {
			appOK += r.OK
			appTried += r.OK + r.Failed
		}
		return r
	}
	if cfg.Warmup > 0 {
		for _, p := range servers {
			progress("warming up %s for %s", p.name, cfg.Warmup)
			load(p, cfg.Warmup)
		}
	}
	var samples []sample
	var errs []string
	for r := 1; r <= cfg.Rounds && ctx.Err() == nil; r++ {
		// Each round starts with a different server (nginx, app,
		// nginx-tuned, ...), so that none always runs first.
		order := make([]*proc, len(servers))
		for i := range servers {
			order[i] = servers[((r-1)*(len(servers)-1)+i)%len(servers)]
		}
		for _, p := range order {
			progress("round %d/%d: %s for %s at concurrency %d", r, cfg.Rounds, p.name, cfg.Duration, cfg.Concurrency)
			s, res, err := measure(ctx, p, r, func() loadResult { return load(p, cfg.Duration) })
			if err != nil {
				return err
			}
			samples = append(samples, s)
			for _, e := range res.Errs {
				errs = append(errs, fmt.Sprintf("round %d %s: %s", r, p.name, e))
			}
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}

	fmt.Fprintln(out, "### Rounds")
	fmt.Fprintln(out)
	roundsTable(out, samples)
	fmt.Fprintln(out)
	if len(errs) > 0 {
		fmt.Fprintln(out, "Failed connections (first errors):")
		fmt.Fprintln(out)
		for _, e := range errs {
			fmt.Fprintln(out, "    "+e)
		}
		fmt.Fprintln(out)
	}
	sa := summarize("app", samples)
	var sums []summary
	for _, p := range peers {
		sums = append(sums, summarize(p.name, samples))
	}
	fmt.Fprintln(out, "### Summary")
	fmt.Fprintln(out)
	summaryTable(out, sa, sums...)
	fmt.Fprintln(out)
	var goals []goal
	for _, sn := range sums {
		goals = append(goals, throughputGoals(sa, sn)...)
	}

	if cfg.Perf != "" {
		if err := perfRecord(ctx, cfg, app, cpus.client, stderr, progress, func() { load(app, cfg.Duration) }); err != nil {
			fmt.Fprintf(out, "perf profile: failed: %v\n\n", err)
		} else {
			fmt.Fprintf(out, "perf profile of the app under load written to %s (not part of the rounds above).\n\n", cfg.Perf)
		}
	}

	// Events: stop the app (drain, flush), then count the records.
	counts, cntErr := connCounts(ctx, app.admin)
	progress("stopping the app and counting its events in Kafka")
	stopErr := app.stop(60 * time.Second)
	appStopped = true
	cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	tc, cerr := countEvents(cctx, brk.addr, brokerTopic)
	cancel()
	fmt.Fprintln(out, "### Events")
	fmt.Fprintln(out)
	const evName = "events flowing to Kafka (one per app connection)"
	var evGoal goal
	switch {
	case cerr != nil:
		fmt.Fprintf(out, "Reading the records on %s failed: %v\n", brokerTopic, cerr)
		evGoal = goal{Name: evName, Result: cerr.Error()}
	default:
		fmt.Fprintf(out, "%d records on topic %s, %d distinct event ids (%d duplicates, %d without an id), for %d app connections answered (%d attempted); app exit: %s.\n",
			tc.Records, brokerTopic, tc.Distinct, tc.Records-tc.Distinct-tc.BadJSON, tc.BadJSON, appOK, appTried, errString(stopErr))
		evGoal = goal{Name: evName,
			Result: fmt.Sprintf("%d distinct events for %d answered connections; %d duplicate records", tc.Distinct, appOK, tc.Records-tc.Distinct-tc.BadJSON),
			Met:    tc.Distinct >= appOK && tc.Distinct <= appTried && tc.BadJSON == 0}
	}
	fmt.Fprintln(out)
	if cntErr == nil {
		fmt.Fprintln(out, "The app's connections by how they ended (its /metrics before the stop):")
		fmt.Fprintln(out)
		for _, c := range counts {
			fmt.Fprintln(out, "    "+c)
		}
		fmt.Fprintln(out)
	}
	goals = append(goals, evGoal)

	if cfg.Idle > 0 && ctx.Err() == nil {
		g, err := idleSection(ctx, out, cfg, appOpts, cpus, clients, ngx, progress)
		if err != nil {
			return err
		}
		goals = append(goals, g)
	}
	writeGoals(out, goals)
	return nil
}

// idleSection measures the app's and nginx's memory per idle connection,
// writes the "Idle connections" section and returns the goal.
func idleSection(ctx context.Context, out io.Writer, cfg config, appOpts appOptions, cpus cpuPlan, clients []client, ngx *proc, progress func(string, ...any)) (goal, error) {
	progress("idle memory: opening %d idle connections to a fresh app", cfg.Idle)
	ir, err := idleMemory(ctx, cfg, appOpts, cpus.server, clients)
	if err != nil {
		return goal{}, err
	}
	progress("idle memory: opening %d idle connections to nginx", cfg.Idle)
	nr, err := idleNginx(ctx, ngx, cfg.Idle)
	if err != nil {
		return goal{}, err
	}
	writeIdle(out, cfg, ir, nr)
	per := ir.PerConn()
	return goal{Name: "app memory per idle open connection <= 4 KiB",
		Result: fmt.Sprintf("%.1f KiB (RSS delta %.1f MiB over %d connections)", per/1024, float64(ir.After.RSS-ir.Before.RSS)/(1<<20), ir.Open),
		Met:    per <= 4*1024 && ir.Open == cfg.Idle}, nil
}

func writeGoals(out io.Writer, goals []goal) {
	fmt.Fprintln(out, "### Goals")
	fmt.Fprintln(out)
	for _, g := range goals {
		fmt.Fprintln(out, g)
	}
	fmt.Fprintln(out)
	fmt.Fprintf(out, "Load average at the end: %s\n", loadAvg())
}

func errString(err error) string {
	if err == nil {
		return "clean"
	}
	return err.Error()
}

// measure runs load against p and reads the server's and the generator's
// CPU and the server's memory around it.
func measure(ctx context.Context, p *proc, round int, load func() loadResult) (sample, loadResult, error) {
	before, err := readStat(p.pid)
	if err != nil {
		return sample{}, loadResult{}, err
	}
	selfBefore, err := readStat(os.Getpid())
	if err != nil {
		return sample{}, loadResult{}, err
	}
	res := load()
	after, err := readStat(p.pid)
	if err != nil {
		return sample{}, loadResult{}, fmt.Errorf("%s died during round %d: %w", p.name, round, err)
	}
	selfAfter, err := readStat(os.Getpid())
	if err != nil {
		return sample{}, loadResult{}, err
	}
	mem, err := readMem(p.pid)
	if err != nil {
		return sample{}, loadResult{}, err
	}
	h := res.Latency
	return sample{
		Server: p.name, Round: round, OK: res.OK, Failed: res.Failed, Wall: res.Wall,
		P50:     time.Duration(h.ValueAtQuantile(50)) * time.Microsecond,
		P99:     time.Duration(h.ValueAtQuantile(99)) * time.Microsecond,
		Max:     time.Duration(h.Max()) * time.Microsecond,
		CPU:     after.CPU - before.CPU,
		GenCPU:  selfAfter.CPU - selfBefore.CPU,
		PeakRSS: mem.Peak, RSS: mem.RSS,
	}, res, nil
}

// sampleReply runs one connection and returns its reply line.
func sampleReply(p *proc, c *client) string {
	conn, err := dialHello(p, c)
	if err != nil {
		return "error: " + err.Error()
	}
	defer conn.Close()
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return "error: " + err.Error()
	}
	return strings.TrimSuffix(line, "\n")
}

// idleMemory starts a fresh app, measures its RSS, opens cfg.Idle idle
// connections, measures again and closes everything.
func idleMemory(ctx context.Context, cfg config, o appOptions, set *unix.CPUSet, clients []client) (idleResult, error) {
	o.idleTimeout = 10 * time.Minute
	o.maxConns = cfg.Idle + 1000
	app, err := startApp(ctx, o, set, &clients[0])
	if err != nil {
		return idleResult{}, err
	}
	defer app.stop(60 * time.Second)
	// A little traffic first, so that the baseline has the runtime and the
	// Kafka producer warm, as a serving app has.
	runLoad(ctx, loadConfig{Target: app.addr, Clients: clients, Concurrency: 8, Duration: 5 * time.Second, MaxConns: 500, Timeout: cfg.Timeout, ReplyLines: app.lines})
	time.Sleep(time.Second)
	r := idleResult{Want: cfg.Idle}
	if r.Before, err = readMem(app.pid); err != nil {
		return r, err
	}
	r.HeapBefore, r.StackBefore, _ = goMem(ctx, app.admin)
	conns, errs := openIdle(ctx, app, clients, cfg.Idle, 64)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	r.Open, r.Errs = len(conns), errs
	select {
	case <-time.After(cfg.IdleWait):
	case <-ctx.Done():
		return r, ctx.Err()
	}
	if r.After, err = readMem(app.pid); err != nil {
		return r, err
	}
	r.HeapAfter, r.StackAfter, _ = goMem(ctx, app.admin)
	return r, nil
}

// idleNginx measures the nginx worker's RSS before and after n
// connections that stay open: each dials and sends nothing, so nginx holds
// it waiting for its PROXY header (proxy_protocol_timeout, 30 s by
// default; nginx's own answer closes every other connection at once). It
// is the closest nginx has to the app's idle netcat session.
func idleNginx(ctx context.Context, p *proc, n int) (idleResult, error) {
	r := idleResult{Want: n}
	var err error
	if r.Before, err = readMem(p.pid); err != nil {
		return r, err
	}
	raddr := net.TCPAddrFromAddrPort(p.addr)
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	deadline := time.Now().Add(20 * time.Second) // well inside nginx's 30 s
	for i := 0; i < n && ctx.Err() == nil && time.Now().Before(deadline); i++ {
		c, err := dial(raddr, 5*time.Second)
		if err != nil {
			if len(r.Errs) < 5 {
				r.Errs = append(r.Errs, err.Error())
			}
			continue
		}
		conns = append(conns, c)
	}
	r.Open = len(conns)
	time.Sleep(2 * time.Second)
	if r.After, err = readMem(p.pid); err != nil {
		return r, err
	}
	return r, nil
}

func writeIdle(w io.Writer, cfg config, r, ngx idleResult) {
	fmt.Fprintln(w, "### Idle connections")
	fmt.Fprintln(w)
	fmt.Fprintf(w, "app: %d of %d idle connections open (each sent its PROXY header and a line, read the report and greeting, then stays silent); "+
		"nginx: %d of %d open (each connected and sent nothing: nginx waits for the PROXY header, the only state in which it holds a connection here).\n\n",
		r.Open, r.Want, ngx.Open, ngx.Want)
	mib := func(b int64) string { return fmt.Sprintf("%.1f", float64(b)/(1<<20)) }
	per := func(r idleResult, a, b int64) string {
		if r.Open == 0 {
			return "-"
		}
		return fmt.Sprintf("%.1f", float64(b-a)/float64(r.Open)/1024)
	}
	table(w, []string{"measure", "before MiB", "with idle conns MiB", "per connection KiB"}, [][]string{
		{"app RSS (VmRSS)", mib(r.Before.RSS), mib(r.After.RSS), per(r, r.Before.RSS, r.After.RSS)},
		{"app Go heap in use", mib(r.HeapBefore), mib(r.HeapAfter), per(r, r.HeapBefore, r.HeapAfter)},
		{"app Go stacks in use", mib(r.StackBefore), mib(r.StackAfter), per(r, r.StackBefore, r.StackAfter)},
		{"nginx worker RSS (VmRSS)", mib(ngx.Before.RSS), mib(ngx.After.RSS), per(ngx, ngx.Before.RSS, ngx.After.RSS)},
	})
	fmt.Fprintln(w)
	if a, n := r.PerConn(), ngx.PerConn(); n > 0 {
		fmt.Fprintf(w, "Per idle connection: app %.1f KiB, nginx %.1f KiB (app/nginx %.2fx).\n\n", a/1024, n/1024, a/n)
	}
	for _, e := range r.Errs {
		fmt.Fprintln(w, "    idle open error (app):", e)
	}
	for _, e := range ngx.Errs {
		fmt.Fprintln(w, "    idle open error (nginx):", e)
	}
}

// perfRecord records a CPU profile of the app with perf while load runs.
func perfRecord(ctx context.Context, cfg config, app *proc, set *unix.CPUSet, stderr io.Writer, progress func(string, ...any), load func()) error {
	perf, err := exec.LookPath("perf")
	if err != nil {
		return err
	}
	secs := fmt.Sprintf("%.0f", cfg.Duration.Seconds())
	cmd := exec.CommandContext(ctx, perf, "record", "-F", "997", "-g", "-p", fmt.Sprint(app.pid), "-o", cfg.Perf, "--", "sleep", secs)
	cmd.Stdout, cmd.Stderr = stderr, stderr
	progress("perf record of the app for %ss", secs)
	if err := startPinned(cmd, set); err != nil {
		return err
	}
	load()
	return cmd.Wait()
}

func writeHeader(ctx context.Context, w io.Writer, cfg config, cpus cpuPlan, nginxBin, appBin string, ngx, app *proc) {
	cmdOut := func(name string, args ...string) string {
		b, _ := exec.CommandContext(ctx, name, args...).CombinedOutput()
		return strings.TrimSpace(string(b))
	}
	fmt.Fprintf(w, "## Run of %s\n\n", time.Now().UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(w, "- machine: %d CPUs (%s), %s RAM, Linux %s\n", runtime.NumCPU(), cpuModel(), memTotal(), readTrim("/proc/sys/kernel/osrelease"))
	fmt.Fprintf(w, "- load average at start: %s (the machine is shared)\n", loadAvg())
	fmt.Fprintf(w, "- go: %s (generator); app: %s\n", runtime.Version(), cmdOut(appBin, "--version"))
	fmt.Fprintf(w, "- nginx: %s, one worker, stream + geoip2 modules\n", strings.TrimPrefix(cmdOut(nginxBin, "-v"), "nginx version: "))
	fmt.Fprintf(w, "- CPUs: %s (nginx worker allowed %s, app allowed %s); app GOMAXPROCS=1\n", cpus.desc, cpusAllowed(ngx.pid), cpusAllowed(app.pid))
	fmt.Fprintf(w, "- load: %d rounds x %s per server, concurrency %d, warm-up %s per server; each connection: PROXY v2 header + `bench` line in one write, read the reply (nginx: its line; app: report line + greeting), close\n",
		cfg.Rounds, cfg.Duration, cfg.Concurrency, cfg.Warmup)
	fmt.Fprintf(w, "- command: bench-peer %s\n\n", strings.Join(os.Args[1:], " "))
}

func readTrim(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}

func cpuModel() string {
	for line := range strings.SplitSeq(readTrim("/proc/cpuinfo"), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "?"
}

func memTotal() string {
	for line := range strings.SplitSeq(readTrim("/proc/meminfo"), "\n") {
		if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			var kb int64
			fmt.Sscanf(strings.TrimSpace(v), "%d", &kb)
			return fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
		}
	}
	return "?"
}

func loadAvg() string {
	f := strings.Fields(readTrim("/proc/loadavg"))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
