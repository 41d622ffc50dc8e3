// Command relay benchmarks the app's relay mode (--upstream, transparent)
// against the two relays a user would pick instead: HAProxy with
// `source 0.0.0.0 usesrc clientip` and nginx stream with
// `proxy_bind $remote_addr transparent`, on the same topology with the
// same generator and the same upstream.
//
// Topology (root only; two network namespaces it creates and deletes): a
// client namespace (198.51.100.10 and, with -sources N, the N-1 addresses
// after it) joined by a veth pair to a server
// namespace (198.51.100.1) that has go-mmproxy's loopback routing (table
// 123) and runs, each on its own port, the three relays (the app with
// GOMAXPROCS=1, HAProxy with nbthread 1, nginx with one worker) and the
// upstream: this program re-executed as "relay upstream", which answers
// every connection with the peer address it sees and then echoes. The
// generator (this program re-executed as "relay load" in the client
// namespace, dialing from its -sources addresses in turn) checks that the
// upstream saw, on every connection through every relay, exactly the
// address that connection came from, then measures
//
//   - conn/s: closed-loop connections (dial, send a line, read the peer
//     line and the echo, close), -concurrency in flight, for -duration;
//   - bulk MB/s: -streams connections each echoing -bulk bytes (the client
//     writes and reads at once), bytes each way per second;
//   - CPU per connection and per GB: the relay's processes' utime+stime
//     (/proc/PID/stat, the process and its children: nginx's and
//     HAProxy's workers) over the round, divided by its connections or
//     bytes. Unlike conn/s it does not depend on the generator keeping up.
//
// A "go-floor" row is the least a transparent relay written with Go's net
// package does (this program re-executed as "relay go-floor", GOMAXPROCS=1;
// see floor.go): the app's distance to it is the app's own cost, its
// distance to HAProxy is Go's. A "direct" row measures the generator
// against the upstream without a relay. Many sources matter: from one address, every closed connection
// leaves a TIME_WAIT on the client's ephemeral ports (and, through a
// transparent relay, the upstream leg reuses the same address and port),
// so connect() searches a full port range and the generator, not the
// relay, sets conn/s. Every load is bounded by count and time. `make bench-relay` runs
// it; results and the command are in BENCHMARKS.md.
//
//	go run ./bench/relay -app bin/app -duration 5s -rounds 2
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const (
	clientIP = "198.51.100.10" // the first source; -sources N adds the N-1 after it
	serverIP = "198.51.100.1"
	upstream = "127.0.0.1:9000"
	direct   = serverIP + ":9009" // the upstream, reached without a relay
)

func main() {
	var err error
	switch {
	case len(os.Args) > 1 && os.Args[1] == "upstream":
		err = runUpstream(os.Args[2:])
	case len(os.Args) > 1 && os.Args[1] == "load":
		err = runLoadCmd(os.Args[2:])
	case len(os.Args) > 1 && os.Args[1] == "go-floor":
		err = runFloor(os.Args[2:])
	default:
		err = runBench(os.Args[1:])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-relay:", err)
		os.Exit(1)
	}
}

// runUpstream serves every address in args: write the peer's IP and a
// newline, then echo until the client closes.
func runUpstream(args []string) error {
	errc := make(chan error, len(args))
	for _, a := range args {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			return err
		}
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					errc <- err
					return
				}
				go func() {
					defer c.Close()
					ip := c.RemoteAddr().(*net.TCPAddr).IP.String()
					if _, err := c.Write([]byte(ip + "\n")); err != nil {
						return
					}
					io.Copy(c, c)
				}()
			}
		}()
	}
	return <-errc
}

// loadResult is what one load run measured, as JSON between processes.
type loadResult struct {
	Conns   int64   `json:"conns"`
	Failed  int64   `json:"failed"`
	Bytes   int64   `json:"bytes"` // echoed bytes each way
	Seconds float64 `json:"seconds"`
	Err     string  `json:"err,omitempty"` // the first failure
}

// runLoadCmd runs one load against a target and prints its loadResult.
func runLoadCmd(args []string) error {
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	target := fs.String("target", "", "host:port")
	mode := fs.String("mode", "conn", "conn or bulk")
	dur := fs.Duration("duration", 5*time.Second, "")
	conc := fs.Int("concurrency", 32, "")
	maxConns := fs.Int64("max-conns", 2_000_000, "")
	streams := fs.Int("streams", 4, "")
	bulk := fs.Int64("bulk", 256<<20, "")
	sources := fs.Int("sources", 1, "source addresses: clientIP and the ones after it")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *sources < 1 || *sources > maxSources {
		return fmt.Errorf("-sources must be 1..%d", maxSources)
	}
	srcs = sourceAddrs(*sources)
	var r loadResult
	if *mode == "bulk" {
		r = bulkLoad(*target, *streams, *bulk, *dur)
	} else {
		r = connLoad(*target, *conc, *maxConns, *dur)
	}
	return json.NewEncoder(os.Stdout).Encode(r)
}

// maxSources bounds -sources: clientIP's last byte plus the sources stays
// inside 198.51.100.0/24.
const maxSources = 200

// srcs are the generator's source addresses; srcNext picks the next.
var (
	srcs    []netip.Addr
	srcNext atomic.Uint64
)

// sourceAddrs returns clientIP and the n-1 addresses after it.
func sourceAddrs(n int) []netip.Addr {
	a := netip.MustParseAddr(clientIP)
	out := make([]netip.Addr, 0, n)
	for range n {
		out = append(out, a)
		a = a.Next()
	}
	return out
}

// dial connects to target from the next source address.
func dial(target string, timeout time.Duration) (*net.TCPConn, netip.Addr, error) {
	src := netip.MustParseAddr(clientIP)
	if len(srcs) > 0 {
		src = srcs[srcNext.Add(1)%uint64(len(srcs))]
	}
	d := net.Dialer{Timeout: timeout, LocalAddr: &net.TCPAddr{IP: src.AsSlice()}}
	c, err := d.Dial("tcp", target)
	if err != nil {
		return nil, src, err
	}
	return c.(*net.TCPConn), src, nil
}

// expectPeer reads the upstream's first line and checks that it is the
// address the connection came from.
func expectPeer(br *bufio.Reader, src netip.Addr) error {
	line, err := br.ReadString('\n')
	if err != nil {
		return fmt.Errorf("reading the upstream's peer line: %w", err)
	}
	if got := strings.TrimSpace(line); got != src.String() {
		return fmt.Errorf("the upstream saw %s, not the client %s", got, src)
	}
	return nil
}

func connLoad(target string, conc int, maxConns int64, dur time.Duration) loadResult {
	var ok, failed, started atomic.Int64
	var first sync.Once
	var r loadResult
	deadline := time.Now().Add(dur)
	begin := time.Now()
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			buf := make([]byte, 5)
			for time.Now().Before(deadline) && started.Add(1) <= maxConns {
				err := func() error {
					c, src, err := dial(target, 5*time.Second)
					if err != nil {
						return err
					}
					defer c.Close()
					c.SetDeadline(time.Now().Add(10 * time.Second))
					if _, err := c.Write([]byte("ping\n")); err != nil {
						return err
					}
					br := bufio.NewReaderSize(c, 64)
					if err := expectPeer(br, src); err != nil {
						return err
					}
					if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "ping\n" {
						return fmt.Errorf("echo %q: %v", buf, err)
					}
					return nil
				}()
				if err != nil {
					failed.Add(1)
					first.Do(func() { r.Err = err.Error() })
					continue
				}
				ok.Add(1)
			}
		})
	}
	wg.Wait()
	r.Conns, r.Failed, r.Seconds = ok.Load(), failed.Load(), time.Since(begin).Seconds()
	return r
}

func bulkLoad(target string, streams int, size int64, dur time.Duration) loadResult {
	var total, failed atomic.Int64
	var first sync.Once
	var r loadResult
	begin := time.Now()
	var wg sync.WaitGroup
	for range streams {
		wg.Go(func() {
			err := func() error {
				c, src, err := dial(target, 5*time.Second)
				if err != nil {
					return err
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(dur + 30*time.Second))
				br := bufio.NewReader(c)
				if _, err := c.Write([]byte("bulk\n")); err != nil {
					return err
				}
				if err := expectPeer(br, src); err != nil {
					return err
				}
				// The writer sends until size or the duration, then
				// half-closes; the reader takes the echo ("bulk\n" first)
				// until the upstream's end of stream.
				stop := time.Now().Add(dur)
				var sent int64
				werr := make(chan error, 1)
				go func() {
					chunk := make([]byte, 256<<10)
					for i := range chunk {
						chunk[i] = byte(rand.Uint32())
					}
					for sent < size && time.Now().Before(stop) {
						n, err := c.Write(chunk)
						sent += int64(n)
						if err != nil {
							werr <- err
							return
						}
					}
					werr <- c.CloseWrite()
				}()
				n, err := io.Copy(io.Discard, br)
				if werr := <-werr; werr != nil {
					return werr
				}
				if err != nil {
					return err
				}
				if n != sent+5 {
					return fmt.Errorf("echoed %d bytes of %d", n, sent+5)
				}
				total.Add(sent)
				return nil
			}()
			if err != nil {
				failed.Add(1)
				first.Do(func() { r.Err = err.Error() })
			}
		})
	}
	wg.Wait()
	r.Conns, r.Failed, r.Bytes, r.Seconds = int64(streams)-failed.Load(), failed.Load(), total.Load(), time.Since(begin).Seconds()
	return r
}
