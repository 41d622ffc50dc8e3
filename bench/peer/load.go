package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/originlens/originlens/internal/report"
	proxyproto "github.com/pires/go-proxyproto"
)

// firstLine is what a generator client says after the PROXY header: the
// app consumes it (line protocol) and nginx's stream `return` ignores it.
// The client then reads the server's reply and closes, as the benchmark's
// issue says ("opens connections with a PROXY v2 header and a first line,
// reads the reply, closes") and as a netcat user who got the answer does.
const firstLine = "bench\n"

// Reply lines per server: nginx's `return` line; the app's report line and
// its greeting (every benchmark client is served). The client reads them
// all before it closes: closing with unread bytes would reset the
// connection instead of ending it.
const (
	nginxReplyLines = 1
	appReplyLines   = 2
)

// client is one simulated client: the bytes it sends and what the reply
// line must say.
type client struct {
	src     netip.AddrPort
	hello   []byte // PROXY v2 header + firstLine, written in one call
	prefix  []byte // the reply must start with this: "client=IP:PORT via=proxy-v2 "
	country string // the reply's country=
}

// newClients builds n clients whose PROXY sources cycle through the
// database's networks (one host per entry, different ports), all claiming
// to have dialed dst.
func newClients(n int, nets []geoNet, dst netip.AddrPort) ([]client, error) {
	cs := make([]client, 0, n)
	for i := range n {
		g := nets[i%len(nets)]
		host := g.Prefix.Addr()
		for range 1 + (i/len(nets))%hostsIn(g.Prefix) { // vary the host inside the network
			host = host.Next()
		}
		src := netip.AddrPortFrom(host, uint16(20000+i))
		h := proxyproto.HeaderProxyFromAddrs(2, net.TCPAddrFromAddrPort(src), net.TCPAddrFromAddrPort(dst))
		b, err := h.Format()
		if err != nil {
			return nil, fmt.Errorf("formatting a PROXY header: %w", err)
		}
		cs = append(cs, client{
			src:     src,
			hello:   append(b, firstLine...),
			prefix:  []byte("client=" + src.String() + " via=proxy-v2 "),
			country: g.Country,
		})
	}
	return cs, nil
}

// loadConfig is one measured run against one server.
type loadConfig struct {
	Target      netip.AddrPort
	Clients     []client
	Concurrency int           // connections in flight
	Duration    time.Duration // stop starting connections after this
	MaxConns    int64         // and after this many
	Timeout     time.Duration // per connection, dial to close
	CheckEvery  int           // parse every Nth reply fully (report.ParseLine)
	ReplyLines  int           // lines the server answers; the client reads them all, then closes
}

// loadResult is what a run measured on the client side.
type loadResult struct {
	OK      int64         // connections that got a valid reply line
	Failed  int64         // connections that did not
	Errs    []string      // the first distinct errors
	Wall    time.Duration // first dial to last close
	Latency *hdrhistogram.Histogram
}

// Histogram bounds, in microseconds: 1 µs to 60 s, 3 significant digits.
const (
	histMin = 1
	histMax = 60_000_000
	histSig = 3
)

func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(histMin, histMax, histSig) }

// runLoad runs cfg.Concurrency closed-loop workers against cfg.Target until
// cfg.Duration has passed, cfg.MaxConns connections have been started or ctx
// is done. Each connection: dial, write the PROXY v2 header and a line, read
// the reply line (the latency sample: dial start to the line's end), check
// it, read the rest of the reply (cfg.ReplyLines lines in all), close. It
// blocks until every worker is done.
func runLoad(ctx context.Context, cfg loadConfig) loadResult {
	ctx, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()
	var (
		started atomic.Int64
		mu      sync.Mutex
		res     = loadResult{Latency: newHist()}
		wg      sync.WaitGroup
	)
	raddr := net.TCPAddrFromAddrPort(cfg.Target)
	begin := time.Now()
	for w := range cfg.Concurrency {
		wg.Go(func() {
			h := newHist()
			var ok, failed int64
			var errs []string
			buf := make([]byte, 2048)
			for i := w; ctx.Err() == nil; i += cfg.Concurrency {
				if started.Add(1) > cfg.MaxConns {
					break
				}
				c := &cfg.Clients[i%len(cfg.Clients)]
				check := cfg.CheckEvery > 0 && (i/cfg.Concurrency)%cfg.CheckEvery == 0
				d, err := oneConn(raddr, c, buf, cfg.Timeout, check, cfg.ReplyLines)
				if err != nil {
					failed++
					if len(errs) < 3 {
						errs = append(errs, err.Error())
					}
					continue
				}
				ok++
				_ = h.RecordValue(max(d.Microseconds(), histMin))
			}
			mu.Lock()
			defer mu.Unlock()
			res.OK += ok
			res.Failed += failed
			res.Latency.Merge(h)
			for _, e := range errs {
				if len(res.Errs) < 5 && !containsStr(res.Errs, e) {
					res.Errs = append(res.Errs, e)
				}
			}
		})
	}
	wg.Wait()
	res.Wall = time.Since(begin)
	return res
}

func containsStr(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// dialSources is how many loopback source addresses dial spreads its
// connections over (-sources); dialNext picks the next.
var dialSources, dialNext atomic.Int64

// errBadReply is a reply line that does not say what the server must have
// seen.
var errBadReply = errors.New("bad reply")

// oneConn runs one connection for c and returns the time from the dial to
// the end of the reply line. It reads lines lines (at least the first)
// before it closes.
func oneConn(raddr *net.TCPAddr, c *client, buf []byte, timeout time.Duration, check bool, lines int) (time.Duration, error) {
	t0 := time.Now()
	conn, err := dial(raddr, timeout)
	if err != nil {
		return 0, fmt.Errorf("dial: %w", err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(t0.Add(timeout)); err != nil {
		return 0, fmt.Errorf("deadline: %w", err)
	}
	if _, err := conn.Write(c.hello); err != nil {
		return 0, fmt.Errorf("write: %w", err)
	}
	n, nl := 0, -1
	for nl < 0 {
		if n == len(buf) {
			return 0, fmt.Errorf("%w: no newline in %d bytes", errBadReply, n)
		}
		m, err := conn.Read(buf[n:])
		if m > 0 {
			nl = bytes.IndexByte(buf[n:n+m], '\n')
			if nl >= 0 {
				nl += n
			}
			n += m
		}
		if nl < 0 && err != nil {
			return 0, fmt.Errorf("read reply: %w", err)
		}
	}
	d := time.Since(t0)
	if err := checkReply(buf[:nl], c, check); err != nil {
		return 0, err
	}
	// The rest of the reply, usually in the same read: the app's greeting.
	for seen := bytes.Count(buf[:n], []byte{'\n'}); seen < lines; {
		if n == len(buf) {
			n = 0 // the lines after the first are not kept
		}
		m, err := conn.Read(buf[n:])
		seen += bytes.Count(buf[n:n+m], []byte{'\n'})
		n += m
		if seen < lines && err != nil {
			return 0, fmt.Errorf("read reply: %d of %d lines: %w", seen, lines, err)
		}
	}
	return d, nil
}

// checkReply checks that a reply line names the client's PROXY source; with
// full, it also parses the line as a report and checks the required keys,
// the country and the decision.
func checkReply(line []byte, c *client, full bool) error {
	if !bytes.HasPrefix(line, c.prefix) {
		return fmt.Errorf("%w: want prefix %q, got %q", errBadReply, c.prefix, clipBytes(line))
	}
	if !full {
		return nil
	}
	r, err := report.ParseLine(string(line))
	if err != nil {
		return fmt.Errorf("%w: %w", errBadReply, err)
	}
	if r[report.KeyCountry] != c.country {
		return fmt.Errorf("%w: country=%q for %s, want %q", errBadReply, r[report.KeyCountry], c.src, c.country)
	}
	if r[report.KeyDecision] != "serve" {
		return fmt.Errorf("%w: decision=%q for %s, want serve", errBadReply, r[report.KeyDecision], c.src)
	}
	return nil
}

func clipBytes(b []byte) string {
	if len(b) > 200 {
		return string(b[:200]) + "..."
	}
	return string(b)
}

// dialHello connects to p and sends c's PROXY header and first line.
func dialHello(p *proc, c *client) (*net.TCPConn, error) {
	conn, err := dial(net.TCPAddrFromAddrPort(p.addr), 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write(c.hello); err != nil {
		conn.Close()
		return nil, fmt.Errorf("write: %w", err)
	}
	return conn, nil
}

// hostsIn is how many addresses of p, past the first and short of the
// last, the generator uses (at most 250).
func hostsIn(p netip.Prefix) int {
	bits := p.Addr().BitLen() - p.Bits()
	if bits >= 8 {
		return 250
	}
	return max(1<<bits-2, 1)
}

// dial connects to raddr within timeout. (net.DialTCP has no timeout, and
// a connect to a server whose accept queue overflows retries its SYN for
// minutes.)
func dial(raddr *net.TCPAddr, timeout time.Duration) (*net.TCPConn, error) {
	d := net.Dialer{Timeout: timeout}
	if n := dialSources.Load(); n > 1 && raddr.IP.IsLoopback() && raddr.IP.To4() != nil {
		// Spread the connections over source addresses 127.0.0.1..n: with
		// one source, a server whose clients close first (the app) fills
		// the client's ephemeral ports with TIME_WAIT and connect() has to
		// search them for one to reuse.
		i := dialNext.Add(1) % n
		d.LocalAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(1+i))}
	}
	c, err := d.Dial("tcp", raddr.String())
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}
