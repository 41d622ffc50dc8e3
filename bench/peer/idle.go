package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// idleResult is the idle-connection memory measurement.
type idleResult struct {
	Want, Open            int
	Errs                  []string
	Before, After         procMem
	HeapBefore, HeapAfter int64 // go_memstats_heap_inuse_bytes
	StackBefore           int64 // go_memstats_stack_inuse_bytes
	StackAfter            int64
}

// PerConn is the RSS delta divided by the open connections.
func (r idleResult) PerConn() float64 {
	if r.Open == 0 {
		return 0
	}
	return float64(r.After.RSS-r.Before.RSS) / float64(r.Open)
}

// openIdle opens n connections to p as idle clients: each sends its PROXY
// header and first line, reads the report and greeting lines, and then
// stays open saying nothing (a netcat user who connected and is reading).
// It returns the open connections; the caller closes them.
func openIdle(ctx context.Context, p *proc, clients []client, n, concurrency int) ([]net.Conn, []string) {
	var (
		mu    sync.Mutex
		conns = make([]net.Conn, 0, n)
		errs  []string
		wg    sync.WaitGroup
	)
	raddr := net.TCPAddrFromAddrPort(p.addr)
	for w := range concurrency {
		wg.Go(func() {
			for i := w; i < n && ctx.Err() == nil; i += concurrency {
				c, err := openOneIdle(raddr, &clients[i%len(clients)])
				mu.Lock()
				if err != nil {
					if len(errs) < 5 {
						errs = append(errs, err.Error())
					}
				} else {
					conns = append(conns, c)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return conns, errs
}

func openOneIdle(raddr *net.TCPAddr, c *client) (net.Conn, error) {
	conn, err := dial(raddr, 10*time.Second)
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write(c.hello); err != nil {
		conn.Close()
		return nil, fmt.Errorf("write: %w", err)
	}
	// The report line and, for decision=serve, the greeting line.
	br := bufio.NewReaderSize(conn, 1024)
	line, err := br.ReadSlice('\n')
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("read report: %w", err)
	}
	if err := checkReply(bytes.TrimRight(line, "\n"), c, false); err != nil {
		conn.Close()
		return nil, err
	}
	if _, err := br.ReadSlice('\n'); err != nil {
		conn.Close()
		return nil, fmt.Errorf("read greeting: %w", err)
	}
	_ = conn.SetDeadline(time.Time{})
	return conn, nil
}

// goMem scrapes the Go heap and stack in use from the app's /metrics.
func goMem(ctx context.Context, admin string) (heap, stack int64, err error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/metrics", nil)
	if err != nil {
		return 0, 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, 0, fmt.Errorf("scraping /metrics: %w", err)
	}
	defer resp.Body.Close()
	heap, stack, err = parseGoMem(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return 0, 0, fmt.Errorf("scraping /metrics: %w", err)
	}
	return heap, stack, nil
}

// parseGoMem reads go_memstats_heap_inuse_bytes and
// go_memstats_stack_inuse_bytes from the Prometheus text format.
func parseGoMem(r io.Reader) (heap, stack int64, err error) {
	sc := bufio.NewScanner(r)
	found := 0
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok || (name != "go_memstats_heap_inuse_bytes" && name != "go_memstats_stack_inuse_bytes") {
			continue
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil {
			return 0, 0, fmt.Errorf("parsing %s: %w", name, err)
		}
		if name == "go_memstats_heap_inuse_bytes" {
			heap = int64(f)
		} else {
			stack = int64(f)
		}
		found++
	}
	if err := sc.Err(); err != nil {
		return 0, 0, err
	}
	if found != 2 {
		return 0, 0, fmt.Errorf("go_memstats heap/stack metrics missing (found %d of 2)", found)
	}
	return heap, stack, nil
}

// connCounts scrapes the app's originlens_connections_total series (one
// per action, reason and via), to explain events that the generator did
// not count as answered connections.
func connCounts(ctx context.Context, admin string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scraping /metrics: %w", err)
	}
	defer resp.Body.Close()
	var out []string
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 8<<20))
	for sc.Scan() {
		if l := sc.Text(); strings.HasPrefix(l, "originlens_connections_total{") {
			out = append(out, l)
		}
	}
	return out, sc.Err()
}
