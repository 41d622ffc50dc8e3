package udp

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/originlens/originlens/internal/event"
	"github.com/originlens/originlens/internal/limit"
	"github.com/originlens/originlens/internal/origin"
)

// handled sums originlens_udp_datagrams_total over the results a datagram
// can have here: every datagram received is counted once in one of them.
func handled(s *Server) float64 {
	return datagrams(s, resultAnswered) + datagrams(s, resultRateLimited) + datagrams(s, resultFlowLimit)
}

// flowKeyOf is an event's client address and port.
func flowKeyOf(ev event.Event) netip.AddrPort {
	return netip.AddrPortFrom(ev.Source.IP, ev.Source.Port)
}

// try sends d from c to r, waits until r counted it (a reply is sent
// before it is counted) and reports whether a reply came. The test must
// have waited for the count of every datagram it sent before.
func try(t *testing.T, r *running, c *net.UDPConn, d []byte) bool {
	t.Helper()
	before := handled(r.srv)
	if _, err := c.WriteToUDPAddrPort(d, r.addr); err != nil {
		t.Fatal(err)
	}
	waitMetric(t, "datagrams handled", func() float64 { return handled(r.srv) }, before+1)
	buf := make([]byte, 4096)
	c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	_, err := c.Read(buf)
	return err == nil
}

// TestChurnerCannotEvictOthers: 50 well-behaved clients hold a flow each;
// then one address sends 5,000 datagrams, each from a new socket (a new
// source port, though the kernel may hand out a closed one's again), with
// the app's reply limit (100/s, burst 200). In a table of 200 flows the
// per-source cap of 64 binds: the churner opens 64 flows, the rest of its
// datagrams are dropped (flow-limit), nothing is evicted. In a table of
// 100 the table fills first: the churner, then the source holding the most
// flows, evicts its own flows only, and its new flows (so its events) come
// no faster than the reply limit. Either way the 50 clients keep their
// flows (one event each at the end, with all their datagrams and replies),
// and every datagram is counted under one result. On the code before the
// cap every new port evicted the least recently seen flow: the 50 clients'
// flows were published early (two events each) and the churner's
// datagrams became about 5,000 events.
func TestChurnerCannotEvictOthers(t *testing.T) {
	for _, maxFlows := range []int{200, 100} {
		t.Run(fmt.Sprint("max-flows-", maxFlows), func(t *testing.T) { testChurn(t, maxFlows) })
	}
}

func testChurn(t *testing.T, maxFlows int) {
	const (
		good, perGood = 50, 10 // datagrams per good client before the churn, and as many after
		churn, batch  = 5000, 50
		cap           = 64
		rate, burst   = 100, 200 // the app's default reply limit
	)
	lim := mustLimiter(t, limit.Config{RatePerIP: rate, BurstPerIP: burst})
	r := start(t, Config{MaxFlows: maxFlows, MaxFlowsPerSource: cap, Limiter: lim}, "")

	type tally struct {
		conn                   *net.UDPConn
		addr                   netip.AddrPort
		sentBytes              int64
		recvPackets, recvBytes int64
	}
	tallies := make([]tally, good)
	talk := func() {
		var wg sync.WaitGroup
		for i := range tallies {
			tl := &tallies[i]
			wg.Go(func() {
				for seq := range perGood {
					d := padded(fmt.Sprintf("good %d seq %d", i, seq), 200)
					reply, _, ok := exchange(t, tl.conn, r.addr, d, waitFor)
					tl.sentBytes += int64(len(d))
					if !ok {
						t.Errorf("good client %d: no reply", i)
						return
					}
					tl.recvPackets++
					tl.recvBytes += int64(len(reply))
				}
			})
		}
		wg.Wait()
	}
	for i := range tallies {
		tallies[i].conn = client(t, fmt.Sprintf("127.0.4.%d", 1+i))
		tallies[i].addr = tallies[i].conn.LocalAddr().(*net.UDPAddr).AddrPort()
	}
	talk()
	if t.Failed() {
		return
	}

	// The churner: a new socket (a new source port) per datagram, in
	// batches, each waited for before the next so that the kernel drops
	// none; its sockets stay open until their replies were sent.
	churner := netip.MustParseAddr("127.0.5.1")
	sent := float64(good * perGood)
	churnStart := time.Now()
	deadline := churnStart.Add(2 * waitFor)
	for n := 0; n < churn; n += batch {
		conns := make([]*net.UDPConn, 0, batch)
		for i := range batch {
			c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(churner, 0)))
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, c)
			if _, err := c.WriteToUDPAddrPort(padded(fmt.Sprint("churn ", n+i), 100), r.addr); err != nil {
				t.Fatal(err)
			}
		}
		sent += batch
		for handled(r.srv) < sent {
			if time.Now().After(deadline) {
				t.Fatalf("after %d churn datagrams: %v handled, want %v", n+batch, handled(r.srv), sent)
			}
			time.Sleep(time.Millisecond)
		}
		for _, c := range conns {
			c.Close()
		}
	}
	churnTime := time.Since(churnStart)
	if got := r.srv.Flows(); got > maxFlows {
		t.Errorf("Flows() = %d over MaxFlows %d", got, maxFlows)
	}
	talk()
	sent += good * perGood
	waitMetric(t, "datagrams handled", func() float64 { return handled(r.srv) }, sent)
	r.stop()

	byClient := map[netip.AddrPort][]event.Event{}
	var churnEvents, churnEvicted, churnAnswered int64
	for _, ev := range r.rec.all() {
		if ev.Source.IP == churner {
			churnEvents++
			churnAnswered += ev.Source.Packets - ev.Flow.RateLimited
			if ev.Flow.End == endEvicted {
				churnEvicted++
			}
			continue
		}
		byClient[flowKeyOf(ev)] = append(byClient[flowKeyOf(ev)], ev)
	}
	for i, tl := range tallies {
		evs := byClient[tl.addr]
		if len(evs) != 1 {
			t.Errorf("good client %d (%s): %d events, want 1 (its flow kept)", i, tl.addr, len(evs))
			continue
		}
		ev := evs[0]
		if ev.Flow.End != endShutdown || ev.Source.Packets != 2*perGood || ev.Source.Bytes != tl.sentBytes ||
			ev.Destination.Packets != tl.recvPackets || ev.Destination.Bytes != tl.recvBytes {
			t.Errorf("good client %d: event end %s in %d/%dB out %d/%dB; want shutdown, sent %d/%dB, received %d/%dB", i,
				ev.Flow.End, ev.Source.Packets, ev.Source.Bytes, ev.Destination.Packets, ev.Destination.Bytes,
				2*perGood, tl.sentBytes, tl.recvPackets, tl.recvBytes)
		}
	}
	if evicted := flowsEnded(r.srv, endEvicted); evicted != float64(churnEvicted) {
		t.Errorf("%v flows evicted, %d of them the churner's: a source may only take flows from a heavier one", evicted, churnEvicted)
	}
	// Its own cap, or what the reply limit let it open in the time.
	bound := int64(cap)
	if maxFlows < good+cap {
		bound = burst + int64(rate*churnTime.Seconds()) + 1
		if churnEvicted == 0 {
			t.Error("the churner filled the table and evicted none of its own flows")
		}
	} else if churnEvicted != 0 || datagrams(r.srv, resultFlowLimit) == 0 {
		t.Errorf("churner under its cap in a roomy table: %d evicted, flow-limit %v; want 0 and some", churnEvicted, datagrams(r.srv, resultFlowLimit))
	}
	if churnEvents == 0 || churnEvents > bound {
		t.Errorf("churner: %d events, want 1 to %d", churnEvents, bound)
	}
	// Every churn datagram was answered in a flow (and is in its event) or
	// counted as refused: the good clients were never limited.
	refused := datagrams(r.srv, resultFlowLimit) + datagrams(r.srv, resultRateLimited)
	if float64(churnAnswered)+refused != churn {
		t.Errorf("churner: %d datagrams answered in events + %v refused (flow-limit %v, rate-limited %v) != %d sent",
			churnAnswered, refused, datagrams(r.srv, resultFlowLimit), datagrams(r.srv, resultRateLimited), churn)
	}
	if got := handled(r.srv); got != sent {
		t.Errorf("datagrams counted %v, sent %v", got, sent)
	}
	t.Logf("churner: %d flows (%d evicted) of %d datagrams in %v; flow-limit %v, rate-limited %v", churnEvents, churnEvicted, churn,
		churnTime.Round(time.Millisecond), datagrams(r.srv, resultFlowLimit), datagrams(r.srv, resultRateLimited))
}

// TestFlowCapExact: with MaxFlowsPerSource N, one address opens N flows
// from N ports, all answered; the N+1th port gets no reply and opens no
// flow (flow-limit, counted), while the N flows and another address are
// still answered. At the end: N events for the address, none for the
// refused port.
func TestFlowCapExact(t *testing.T) {
	const n = 4
	r := start(t, Config{MaxFlowsPerSource: n}, "")
	var conns []*net.UDPConn
	ports := map[netip.AddrPort]bool{}
	for i := range n {
		c := client(t, "127.0.6.1")
		if !try(t, r, c, padded(fmt.Sprint("port ", i), 200)) {
			t.Fatalf("flow %d of %d: no reply", i+1, n)
		}
		conns = append(conns, c)
		ports[c.LocalAddr().(*net.UDPAddr).AddrPort()] = true
	}
	if try(t, r, client(t, "127.0.6.1"), padded("one too many", 200)) {
		t.Error("flow N+1 got a reply")
	}
	if got := r.srv.Flows(); got != n {
		t.Errorf("Flows() = %d, want %d", got, n)
	}
	for i, c := range conns {
		if !try(t, r, c, padded("again", 200)) {
			t.Errorf("flow %d: no reply once the source is at its cap", i)
		}
	}
	if !try(t, r, client(t, "127.0.6.2"), padded("other", 200)) {
		t.Error("another address: no reply")
	}
	r.stop()
	events := 0
	for _, ev := range r.rec.all() {
		if ev.Source.IP.String() != "127.0.6.1" {
			continue
		}
		events++
		if !ports[flowKeyOf(ev)] || ev.Source.Packets != 2 || ev.Destination.Packets != 2 {
			t.Errorf("event for %s: in %d out %d; want one of the %d flows, 2 each way", flowKeyOf(ev), ev.Source.Packets, ev.Destination.Packets, n)
		}
	}
	if events != n || datagrams(r.srv, resultFlowLimit) != 1 {
		t.Errorf("%d events, flow-limit %v; want %d and 1", events, datagrams(r.srv, resultFlowLimit), n)
	}
}

// TestFlowCapPrefix: the cap counts a source as the limiter does, by
// prefix: addresses of one IPv6 /64 (clients behind a trusted PROXY v2
// peer) share it, another /64 has its own, and with PrefixV6 128 every
// address has its own; IPv4 sockets of one /24 share it with PrefixV4 24.
func TestFlowCapPrefix(t *testing.T) {
	const n = 3
	res := mustResolver(t, origin.Config{Mode: origin.Trusted, Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}})
	send := func(r *running, lb *net.UDPConn, client string) bool {
		t.Helper()
		return try(t, r, lb, udpHeader(t, client, "[2001:db8::1]:443", padded("v6", 200)))
	}
	r := start(t, Config{Resolver: res, MaxFlowsPerSource: n}, "")
	lb := client(t, "127.0.0.2")
	for i := 1; i <= n; i++ {
		if !send(r, lb, fmt.Sprintf("[2001:db8:0:1::%d]:5000", i)) {
			t.Fatalf("client %d of the /64: no reply", i)
		}
	}
	for _, c := range []string{"[2001:db8:0:1::99]:5000", "[2001:db8:0:1:ffff:ffff:ffff:ffff]:6000", "[2001:db8:0:1::1]:5001"} {
		if send(r, lb, c) {
			t.Errorf("%s: answered, but its /64 holds %d flows", c, n)
		}
	}
	if !send(r, lb, "[2001:db8:0:2::1]:5000") {
		t.Error("another /64: no reply")
	}
	if got := datagrams(r.srv, resultFlowLimit); got != 3 {
		t.Errorf("flow-limit %v, want 3", got)
	}
	r.stop()
	if evs := r.rec.all(); len(evs) != n+1 {
		t.Errorf("%d events, want %d", len(evs), n+1)
	}

	per128 := start(t, Config{Resolver: res, MaxFlowsPerSource: n, PrefixV6: 128}, "")
	for i := 1; i <= n+2; i++ {
		if !send(per128, lb, fmt.Sprintf("[2001:db8:0:1::%d]:5000", i)) {
			t.Errorf("PrefixV6 128: client %d: no reply", i)
		}
	}

	per24 := start(t, Config{MaxFlowsPerSource: n, PrefixV4: 24}, "")
	for i := 1; i <= n+1; i++ {
		c := client(t, fmt.Sprintf("127.0.9.%d", i))
		if got := try(t, per24, c, padded("v4", 200)); got != (i <= n) {
			t.Errorf("PrefixV4 24: address %d of the /24 answered %v, want %v", i, got, i <= n)
		}
	}
}

// TestRateLimitedOpensNoFlow: a datagram over the per-source reply limit
// from a port without a flow opens none (so that the limit bounds table
// growth too); one of an open flow still counts in its event. On the code
// before, every limited datagram from a new port opened a flow: 5 flows
// and 5 events for 2 replies.
func TestRateLimitedOpensNoFlow(t *testing.T) {
	r := start(t, Config{Limiter: mustLimiter(t, limit.Config{RatePerIP: 0.001, BurstPerIP: 2})}, "")
	first := client(t, "127.0.6.3")
	replies := 0
	for i := range 5 {
		c := first
		if i > 0 {
			c = client(t, "127.0.6.3")
		}
		if try(t, r, c, padded("limited", 200)) {
			replies++
		}
	}
	// Over the limit on the open flow: counted in its event.
	if try(t, r, first, padded("limited", 200)) {
		replies++
	}
	if replies != 2 || datagrams(r.srv, resultRateLimited) != 4 {
		t.Errorf("%d replies, rate-limited %v; want 2 and 4", replies, datagrams(r.srv, resultRateLimited))
	}
	if got := r.srv.Flows(); got != 2 {
		t.Errorf("Flows() = %d, want 2: limited datagrams open no flow", got)
	}
	r.stop()
	evs := r.rec.all()
	if len(evs) != 2 {
		t.Fatalf("%d events, want 2", len(evs))
	}
	for _, ev := range evs {
		want := int64(0)
		if flowKeyOf(ev) == first.LocalAddr().(*net.UDPAddr).AddrPort() {
			want = 1
		}
		if ev.Flow.RateLimited != want {
			t.Errorf("flow %s: rate_limited %d, want %d", flowKeyOf(ev), ev.Flow.RateLimited, want)
		}
	}
}

// TestEvictHeaviestSource: in a full table a new flow evicts the least
// recently seen flow of the source holding the most flows, not the least
// recently seen flow overall; that source's own new flow evicts its own
// oldest, not a lighter source's; a source holding fewer flows takes the
// heaviest's. On the code before, the least recently seen flow (a light
// source's) was evicted.
func TestEvictHeaviestSource(t *testing.T) {
	r := start(t, Config{MaxFlows: 8, MaxFlowsPerSource: 8}, "")
	open := func(ip string) netip.AddrPort {
		t.Helper()
		c := client(t, ip)
		if !try(t, r, c, padded("open", 200)) {
			t.Fatalf("%s: no reply", ip)
		}
		return c.LocalAddr().(*net.UDPAddr).AddrPort()
	}
	for i := range 4 {
		open(fmt.Sprintf("127.0.8.%d", 1+i))
	}
	var heavy []netip.AddrPort
	for range 4 {
		heavy = append(heavy, open("127.0.8.10"))
	}
	evicted := func(n int, want netip.AddrPort, why string) {
		t.Helper()
		evs := r.rec.waitEvents(t, n)
		if got := flowKeyOf(evs[n-1]); got != want || evs[n-1].Flow.End != endEvicted {
			t.Errorf("%s: evicted %s (%s), want %s", why, got, evs[n-1].Flow.End, want)
		}
	}
	open("127.0.8.20") // a new source: the table is full
	evicted(1, heavy[0], "a new source")
	heavy = append(heavy, open("127.0.8.10"))
	evicted(2, heavy[1], "the heaviest source's new flow")
	open("127.0.8.1") // a light source's second flow
	evicted(3, heavy[2], "a lighter source's new flow")
	if got := r.srv.Flows(); got != 8 {
		t.Errorf("Flows() = %d, want 8", got)
	}
	r.stop()
	if n := len(r.rec.all()); n != 11 {
		t.Errorf("%d events, want 11 (8 open flows and 3 evicted)", n)
	}
}

// TestFlowTableInvariants drives random datagrams (random sources in a few
// prefixes, random ports) through the datagram path of a small table with
// idle expiry and checks the table's bookkeeping after each: every flow
// counted once for its source, each source in the bucket of its count, the
// top bucket the highest non-empty one, no source over the cap, the table
// within MaxFlows, the early list exactly the flows of one datagram
// without proof, oldest first.
func TestFlowTableInvariants(t *testing.T) {
	for _, tc := range []struct{ maxFlows, perSource int }{{16, 5}, {6, 64}, {1, 1}, {1, 4}} {
		t.Run(fmt.Sprintf("max-%d-per-source-%d", tc.maxFlows, tc.perSource), func(t *testing.T) {
			srv, err := New(Config{Resolver: mustResolver(t, origin.Config{}), Publisher: discard{}, MaxFlows: tc.maxFlows, MaxFlowsPerSource: tc.perSource})
			if err != nil {
				t.Fatal(err)
			}
			sock := &socket{local: netip.MustParseAddrPort("127.0.0.1:9")}
			rng := rand.New(rand.NewPCG(1, 2))
			now := time.Unix(1e9, 0)
			d := padded("x", 200)
			for i := range 20000 {
				now = now.Add(time.Duration(rng.IntN(20)) * time.Millisecond)
				var ip netip.Addr
				if rng.IntN(2) == 0 {
					ip = netip.AddrFrom4([4]byte{198, 51, 100, byte(rng.IntN(12))})
				} else {
					ip = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 7: byte(rng.IntN(4)), 15: byte(rng.IntN(200))})
				}
				peer := netip.AddrPortFrom(ip, uint16(1024+rng.IntN(8)))
				_, f := srv.answer(sock, d, nil, peer, now, nil)
				if f != nil {
					srv.flows.done(srv, f)
				}
				if rng.IntN(50) == 0 {
					for _, f := range srv.flows.expire(now, 500*time.Millisecond) {
						srv.publish(f, endIdle)
					}
				}
				if msg := srv.flows.check(); msg != "" {
					t.Fatalf("after datagram %d: %s", i, msg)
				}
			}
			if flowsEnded(srv, endEvicted) == 0 {
				t.Error("no flow evicted: the table never filled")
			}
			// Both kinds of victim were chosen: early drops and the
			// heaviest source's least recently seen flow.
			if early, all := value(srv.metrics.earlyDrops), flowsEnded(srv, endEvicted); early == 0 || early >= all {
				t.Errorf("%v evicted, %v of them early drops: want some of both kinds", all, early)
			}
		})
	}
}

// check returns what is wrong with t's bookkeeping, or "".
func (t *flowTable) check() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.m) > t.max {
		return fmt.Sprintf("%d flows over max %d", len(t.m), t.max)
	}
	counted := 0
	for key, src := range t.sources {
		n := 0
		for f := src.oldest; f != nil; f = f.snext {
			if f.src != src || t.m[f.key] != f {
				return fmt.Sprintf("source %s lists a flow not its own or not in the table", key)
			}
			n++
		}
		if n != src.n || n == 0 || n > t.perSource {
			return fmt.Sprintf("source %s: %d flows listed, n %d, cap %d", key, n, src.n, t.perSource)
		}
		counted += n
	}
	if counted != len(t.m) {
		return fmt.Sprintf("sources count %d flows, table holds %d", counted, len(t.m))
	}
	inBuckets, top := 0, 0
	for n := 1; n < len(t.byCount); n++ {
		for s := t.byCount[n].head; s != nil; s = s.next {
			if s.n != n || t.sources[s.key] != s {
				return fmt.Sprintf("bucket %d holds source %s with %d flows", n, s.key, s.n)
			}
			inBuckets++
			top = n
		}
	}
	if inBuckets != len(t.sources) || top != t.top {
		return fmt.Sprintf("buckets hold %d of %d sources, top %d, want %d", inBuckets, len(t.sources), t.top, top)
	}
	// The early list: exactly the flows with one datagram and no proof,
	// linked both ways, oldest first.
	listed := 0
	var prev *flow
	for f := t.earlyHead; f != nil; prev, f = f, f.enext {
		if f.eprev != prev || !f.early || t.m[f.key] != f || f.inPackets != 1 || f.proven.Load() {
			return fmt.Sprintf("early list holds flow %v: early %v, in table %v, %d datagrams, proven %v",
				f.key.client, f.early, t.m[f.key] == f, f.inPackets, f.proven.Load())
		}
		if prev != nil && f.first.Before(prev.first) {
			return fmt.Sprintf("early list out of order: %v first seen before %v", f.key.client, prev.key.client)
		}
		listed++
	}
	if t.earlyTail != prev {
		return "early list's tail is not its last flow"
	}
	want := 0
	for _, f := range t.m {
		if f.inPackets == 1 && !f.proven.Load() {
			want++
		}
	}
	if listed != want {
		return fmt.Sprintf("early list holds %d flows, the table %d with one datagram unproven", listed, want)
	}
	return ""
}

// TestMaxFlowsOneAddress: one address whose sockets outnumber MaxFlows
// (and under its per-source cap) still gets every reply, and the full table
// publishes its oldest flows, as the contract says (the oldest idle
// flow is evicted, counted): the cap does not turn a small table into
// refusals.
func TestMaxFlowsOneAddress(t *testing.T) {
	const max, socks = 3, 6
	r := start(t, Config{MaxFlows: max}, "")
	var order []netip.AddrPort
	for i := range socks {
		c := client(t, "127.0.6.9")
		if !try(t, r, c, padded("p", 200)) {
			t.Fatalf("socket %d: no reply", i)
		}
		order = append(order, c.LocalAddr().(*net.UDPAddr).AddrPort())
	}
	evs := r.rec.waitEvents(t, socks-max)
	for i, ev := range evs {
		if flowKeyOf(ev) != order[i] || ev.Flow.End != endEvicted {
			t.Errorf("event %d: %s (%s), want %s evicted", i, flowKeyOf(ev), ev.Flow.End, order[i])
		}
	}
	if got := flowsEnded(r.srv, endEvicted); got != socks-max {
		t.Errorf("evicted %v, want %d", got, socks-max)
	}
}
