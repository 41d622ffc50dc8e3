package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/originlens/originlens/internal/mmdb"
	"github.com/originlens/originlens/internal/probe"
)

// weights makes some countries busier than others, so that the heat map
// has contrast. Countries not listed weigh 1.
var weights = map[string]int{"US": 4, "DE": 3, "GB": 3, "JP": 3, "IN": 3, "BR": 2, "FR": 2, "SG": 2, "AU": 2}

// sources returns the client addresses the probes claim in their PROXY
// headers: for every network of the table, a few hosts (more for the busy
// countries), interleaved so that any prefix of the list spans many
// countries; plus a few from 192.0.2.240/28, which the table leaves
// unplaced. The list is deterministic.
func sources(t mmdb.Table) []netip.AddrPort {
	var perNet [][]netip.AddrPort
	for i, e := range t.City {
		w := weights[e.CountryISO]
		if w == 0 {
			w = 1
		}
		var hosts []netip.AddrPort
		a := e.Prefix.Addr().Next()
		for j := range w {
			hosts = append(hosts, netip.AddrPortFrom(a, uint16(40000+100*i+j)))
			if n := a.Next(); e.Prefix.Contains(n) {
				a = n
			}
		}
		perNet = append(perNet, hosts)
	}
	perNet = append(perNet, []netip.AddrPort{netip.MustParseAddrPort("192.0.2.241:41000")})
	var out []netip.AddrPort
	for round := 0; ; round++ {
		added := false
		for _, hosts := range perNet {
			if round < len(hosts) {
				out = append(out, hosts[round])
				added = true
			}
		}
		if !added {
			return out
		}
	}
}

// tally is the client-side view of the traffic: what the probes were told.
type tally struct {
	mu        sync.Mutex
	Served    int // decision serve
	Redirect  int // decision redirect
	Denied    int // decision deny
	Refused   int // the app closed the connection without a report
	Failed    int // any other failure (timeouts, connection errors)
	ByCountry map[string]*countryTally
	LastErr   error
}

type countryTally struct {
	ISO, Name                string
	Serve, Redirect, Deny, N int
}

func (t *tally) add(a probe.Attempt) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if a.Err != nil {
		if probe.StageOf(a.Err) == probe.StageReport && errors.Is(a.Err, probe.ErrClosed) {
			t.Refused++
		} else {
			t.Failed++
			t.LastErr = a.Err
		}
		return
	}
	iso := a.Report["country"]
	if iso == "" || iso == "-" {
		iso = "--"
	}
	if t.ByCountry == nil {
		t.ByCountry = make(map[string]*countryTally)
	}
	c := t.ByCountry[iso]
	if c == nil {
		c = &countryTally{ISO: iso}
		t.ByCountry[iso] = c
	}
	c.N++
	switch a.Report["decision"] {
	case probe.DecisionServe:
		t.Served++
		c.Serve++
	case probe.DecisionRedirect:
		t.Redirect++
		c.Redirect++
	case probe.DecisionDeny:
		t.Denied++
		c.Deny++
	default:
		t.Failed++
		t.LastErr = fmt.Errorf("report without a decision: %q", a.Report.Line())
	}
}

func (t *tally) countries() []*countryTally {
	var out []*countryTally
	for _, c := range t.ByCountry {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].N != out[j].N {
			return out[i].N > out[j].N
		}
		return out[i].ISO < out[j].ISO
	})
	return out
}

// traffic runs the clients through the app's trusted path: PROXY v2 headers
// from 127.0.0.1 claiming the table's addresses. It blocks until done or ctx
// is done.
func traffic(ctx context.Context, target string, srcs []netip.AddrPort, count, conc int, t *tally) error {
	_, err := probe.Run(ctx, probe.Config{
		Target:       target,
		Count:        count,
		Concurrency:  conc,
		ProxySources: srcs,
		Options: probe.Options{
			Timeout: 5 * time.Second,
			Echo:    1,
			Line:    "originlens demo",
			Bind:    netip.MustParseAddr("127.0.0.1"),
			Proxy:   &probe.ProxyHeader{Version: 2},
		},
		OnAttempt: t.add,
	})
	if err != nil {
		return fmt.Errorf("traffic run: %w", err)
	}
	return nil
}

// spoofSource is the untrusted source address of the spoof attempts: on
// loopback but outside the app's --trusted-proxies 127.0.0.1/32.
var spoofSource = netip.MustParseAddr("127.0.0.2")

// spoofs sends PROXY v2 headers from spoofSource claiming the table's
// addresses; the app must refuse every one.
func spoofs(ctx context.Context, target string, srcs []netip.AddrPort, count int, t *tally) error {
	if count == 0 {
		return nil
	}
	_, err := probe.Run(ctx, probe.Config{
		Target:       target,
		Count:        count,
		Concurrency:  4,
		ProxySources: srcs,
		Options: probe.Options{
			Timeout: 5 * time.Second,
			Line:    "originlens demo spoof",
			Bind:    spoofSource,
			Proxy:   &probe.ProxyHeader{Version: 2},
		},
		OnAttempt: t.add,
	})
	if err != nil {
		return fmt.Errorf("spoof run: %w", err)
	}
	return nil
}

// buildDB builds the demo City database from the table into path.
func buildDB(table, path string) (mmdb.Table, error) {
	f, err := os.Open(table)
	if err != nil {
		return mmdb.Table{}, fmt.Errorf("reading the GeoIP table: %w", err)
	}
	defer f.Close()
	t, err := mmdb.ParseTable(f)
	if err != nil {
		return mmdb.Table{}, fmt.Errorf("reading the GeoIP table %s: %w", table, err)
	}
	if len(t.City) == 0 {
		return mmdb.Table{}, fmt.Errorf("GeoIP table %s has no located networks", table)
	}
	if err := mmdb.WriteCityFile(path, t.City, time.Now()); err != nil {
		return mmdb.Table{}, fmt.Errorf("building the demo GeoIP database: %w", err)
	}
	return t, nil
}
