package udp

import (
	"bytes"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/originlens/originlens/internal/event"
	"github.com/originlens/originlens/internal/origin"
	"github.com/originlens/originlens/internal/policy"
)

// Flow ends: flow.end values.
const (
	endIdle     = "idle-timeout" // no datagram either way for IdleTimeout
	endShutdown = "shutdown"     // still open when Serve stopped
	endEvicted  = "evicted"      // dropped for a new flow over MaxFlows: the least recently seen flow of the source holding the most flows, or an early drop (see victim)
)

// flowKey identifies a flow: the true client and the address it sent to,
// and the peer address the datagrams come from (the client itself, or a
// trusted proxy): a client's datagrams sent direct and those a proxy
// forwards for it are two paths, each with its own report (via, peer),
// proof of address and event.
type flowKey struct {
	client, server netip.AddrPort
	peer           netip.Addr
}

func keyOf(o origin.Origin) flowKey { return flowKey{o.Client, o.Server, o.Peer.Addr()} }

// flow is one flow's state. key, ev's fields set at creation, d, line,
// proof and oob never change after creation; in*, first, last, refs and
// end change under the table's lock; the atomics are updated by the
// readers as they answer.
//
// A flow taken out of the table (evicted, idle, shutdown) while readers
// still answer its datagrams is published by the last of them to call
// [flowTable.done], so that its event counts every reply.
type flow struct {
	key          flowKey
	prev, next   *flow   // the table's list, least recently seen first
	src          *source // the source it counts for
	sprev, snext *flow   // src's list, least recently seen first
	eprev, enext *flow   // the table's early list, oldest first, while early
	early        bool    // one datagram seen and source not proven: in the early list

	ev    event.Event     // filled at creation (addresses, geo, decision); completed by publish
	d     policy.Decision // the rules' decision at the flow's start
	line  []byte          // the report line with the token, no newline
	token string
	proof []byte // "token=<token>": a probe line holding it proves the source
	oob   []byte // the reply's control message: the source address to use

	first, last        time.Time
	inPackets, inBytes int64
	refs               int    // datagrams touched and not yet done
	end                string // set when the flow left the table: publish once refs is 0
	proven             atomic.Bool
	outPackets         atomic.Int64
	outBytes           atomic.Int64
	rateLimited        atomic.Int64
	truncated          atomic.Int64
}

// source is a client prefix ([Config.PrefixV4], [Config.PrefixV6]) with
// open flows: how many, in a list least recently seen first, and its place
// in the table's bucket of sources holding as many.
type source struct {
	key            netip.Prefix
	n              int
	oldest, newest *flow
	prev, next     *source // its bucket's list, least recently seen first
}

// sourceList is a bucket: the sources holding the same number of flows,
// least recently seen first.
type sourceList struct{ head, tail *source }

// flowTable holds the open flows in a map and in a list ordered by last
// datagram, so that the idle ones are found at the front. Every flow also
// counts for its source (the client address's prefix), which may hold at
// most perSource flows; sources sit in buckets by the number of flows they
// hold, so that the table finds the source holding the most flows, and its
// least recently seen flow, in constant time: the flow a full table evicts
// (see victim). The flows that have seen one datagram and not proven
// their source also sit in the early list, oldest first: when no source
// holds more than one flow, the full table drops the oldest of them first
// (conntrack's early drop), so that a flood of spoofed one-datagram
// sources takes the room of its own kind. It is safe for concurrent use.
type flowTable struct {
	mu         sync.Mutex
	m          map[flowKey]*flow
	head, tail *flow
	max        int

	earlyHead, earlyTail *flow // flows with one datagram, unproven, oldest first

	perSource    int
	bits4, bits6 int
	sources      map[netip.Prefix]*source
	byCount      []sourceList // [n]: the sources holding n flows; [0] unused
	top          int          // the largest n with a source, 0 when empty
}

func (t *flowTable) init(max, perSource, bits4, bits6 int) {
	t.m = make(map[flowKey]*flow)
	t.max = max
	t.perSource = perSource
	t.bits4, t.bits6 = bits4, bits6
	t.sources = make(map[netip.Prefix]*source)
	t.byCount = make([]sourceList, min(perSource, max)+1) // a source holds at most both
}

func (t *flowTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.m)
}

// sourceOf returns the source addr counts as: its prefix of the configured
// length for its family, as internal/limit counts it.
func (t *flowTable) sourceOf(addr netip.Addr) netip.Prefix {
	addr = addr.Unmap()
	bits := t.bits6
	if addr.Is4() {
		bits = t.bits4
	}
	p, _ := addr.Prefix(bits)
	return p
}

// atCap reports whether src (nil: none open) holds its cap of flows. t.mu
// is held.
func (t *flowTable) atCap(src *source) bool { return src != nil && src.n >= t.perSource }

// victim returns the flow a full table drops for a new flow of src (nil:
// none open) and whether it is an early drop. When every source holds one
// flow (fairness between sources cannot choose), it is the oldest flow
// that has seen one datagram and not proven its source, if any: a flood of
// spoofed sources, each sending one datagram, then replaces its own flows
// and not those of clients that sent two. Otherwise it is the least
// recently seen flow of the source holding the most flows, or src's own
// when src holds as many as any. So a source takes flows only from sources
// holding more than it does, a churning source loses its own first, and
// among sources of one flow the least recently seen goes. t.mu is held;
// the table is not empty.
func (t *flowTable) victim(src *source) (f *flow, early bool) {
	if t.top == 1 && t.earlyHead != nil {
		return t.earlyHead, true
	}
	if src != nil && src.n == t.top {
		return src.oldest, false
	}
	return t.byCount[t.top].head.oldest, false
}

// touch records a datagram of n bytes whose probe line is line from origin
// o at now and returns its flow. It opens the flow when there is none, the
// source is under its cap and the per-source reply limit admits the
// datagram (a datagram over either limit opens no flow); over MaxFlows the
// victim is dropped first, and published once its datagrams are done. It
// returns a nil flow and the datagram's result when it opened none;
// acquired says whether the limiter already admitted the datagram. The
// caller must call done with a flow returned once it has accounted for the
// datagram's reply.
func (t *flowTable) touch(s *Server, sock *socket, o origin.Origin, dst netip.AddrPort, now time.Time, n int, line []byte) (f *flow, acquired bool, result string) {
	k := keyOf(o)
	var evicted *flow
	t.mu.Lock()
	created := false
	if f = t.m[k]; f == nil {
		key := t.sourceOf(o.Client.Addr())
		if t.atCap(t.sources[key]) {
			t.mu.Unlock()
			return nil, false, resultFlowLimit
		}
		t.mu.Unlock()
		// Limit, locate and decide without the lock.
		if !s.acquire(o.Client.Addr(), now) {
			return nil, false, resultRateLimited
		}
		nf := s.buildFlow(sock, o, dst, now)
		t.mu.Lock()
		if f = t.m[k]; f == nil {
			if t.atCap(t.sources[key]) { // another reader opened flows meanwhile
				t.mu.Unlock()
				return nil, true, resultFlowLimit
			}
			if len(t.m) >= t.max {
				e, early := t.victim(t.sources[key])
				if early {
					s.metrics.earlyDrops.Inc()
				}
				if t.take(e, endEvicted) {
					evicted = e
				}
			}
			src := t.sources[key] // after the eviction, which may have emptied it
			if src == nil {
				src = &source{key: key}
				t.sources[key] = src
			}
			f = nf
			t.m[k] = f
			t.pushBack(f)
			t.addToSource(src, f)
			created = true
			s.metrics.flowsOpen.Set(float64(len(t.m)))
		}
		acquired = true
	}
	if !created {
		t.moveToBack(f)
		if src := f.src; src.newest != f || t.byCount[src.n].tail != src {
			t.seen(f) // not the last seen already (one client sending in turn)
		}
	}
	f.refs++
	f.inPackets++
	f.inBytes += int64(n)
	if now.After(f.last) {
		f.last = now
	}
	if len(line) > 0 && !f.proven.Load() && bytes.Contains(line, f.proof) {
		f.proven.Store(true)
	}
	if created {
		if !f.proven.Load() {
			t.pushEarly(f)
		}
	} else if f.early {
		t.unlinkEarly(f) // a second datagram (or a proof): no longer dropped early
	}
	t.mu.Unlock()
	if evicted != nil {
		s.publish(evicted, endEvicted)
	}
	return f, acquired, ""
}

// done ends a datagram of f that touch recorded: when f has left the
// table and this was its last datagram in flight, it publishes f.
func (t *flowTable) done(s *Server, f *flow) {
	t.mu.Lock()
	f.refs--
	end := ""
	if f.refs == 0 {
		end = f.end
	}
	t.mu.Unlock()
	if end != "" {
		s.publish(f, end)
	}
}

// expire removes the flows idle for idle at now and returns those to
// publish now (the others are published by done).
func (t *flowTable) expire(now time.Time, idle time.Duration) []*flow {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []*flow
	for f := t.head; f != nil && now.Sub(f.last) >= idle; f = t.head {
		if t.take(f, endIdle) {
			out = append(out, f)
		}
	}
	return out
}

// takeAll removes every flow and returns those to publish now, least
// recently seen first (the others are published by done).
func (t *flowTable) takeAll(end string) []*flow {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []*flow
	for f := t.head; f != nil; f = t.head {
		if t.take(f, end) {
			out = append(out, f)
		}
	}
	return out
}

// take removes f from the table with end and reports whether it is to be
// published now (no datagram of it in flight). t.mu is held.
func (t *flowTable) take(f *flow, end string) bool {
	t.unlink(f)
	if f.early {
		t.unlinkEarly(f)
	}
	t.removeFromSource(f)
	delete(t.m, f.key)
	f.end = end
	return f.refs == 0
}

// unlink takes f out of the list (not the map).
func (t *flowTable) unlink(f *flow) {
	if f.prev != nil {
		f.prev.next = f.next
	} else {
		t.head = f.next
	}
	if f.next != nil {
		f.next.prev = f.prev
	} else {
		t.tail = f.prev
	}
	f.prev, f.next = nil, nil
}

func (t *flowTable) pushBack(f *flow) {
	f.prev, f.next = t.tail, nil
	if t.tail != nil {
		t.tail.next = f
	} else {
		t.head = f
	}
	t.tail = f
}

func (t *flowTable) moveToBack(f *flow) {
	if t.tail != f {
		t.unlink(f)
		t.pushBack(f)
	}
}

// pushEarly appends the new flow f to the early list. t.mu is held.
func (t *flowTable) pushEarly(f *flow) {
	f.early = true
	f.eprev, f.enext = t.earlyTail, nil
	if t.earlyTail != nil {
		t.earlyTail.enext = f
	} else {
		t.earlyHead = f
	}
	t.earlyTail = f
}

// unlinkEarly takes f out of the early list. t.mu is held.
func (t *flowTable) unlinkEarly(f *flow) {
	if f.eprev != nil {
		f.eprev.enext = f.enext
	} else {
		t.earlyHead = f.enext
	}
	if f.enext != nil {
		f.enext.eprev = f.eprev
	} else {
		t.earlyTail = f.eprev
	}
	f.eprev, f.enext, f.early = nil, nil, false
}

// addToSource counts the new flow f for src, moving src to the next
// bucket. t.mu is held.
func (t *flowTable) addToSource(src *source, f *flow) {
	f.src = src
	src.push(f)
	if src.n > 0 {
		t.byCount[src.n].remove(src)
	}
	src.n++
	t.byCount[src.n].pushBack(src)
	t.top = max(t.top, src.n)
}

// removeFromSource uncounts f, moving its source to the previous bucket
// or, holding no flow now, out of the table. t.mu is held.
func (t *flowTable) removeFromSource(f *flow) {
	src := f.src
	src.unlink(f)
	t.byCount[src.n].remove(src)
	src.n--
	if src.n > 0 {
		t.byCount[src.n].pushBack(src)
	} else {
		delete(t.sources, src.key)
	}
	for t.top > 0 && t.byCount[t.top].head == nil {
		t.top--
	}
}

// seen moves f to the back of its source's list and the source to the
// back of its bucket: both were seen last. t.mu is held.
func (t *flowTable) seen(f *flow) {
	src := f.src
	if src.newest != f {
		src.unlink(f)
		src.push(f)
	}
	if b := &t.byCount[src.n]; b.tail != src {
		b.remove(src)
		b.pushBack(src)
	}
}

// unlink takes f out of src's list of flows.
func (src *source) unlink(f *flow) {
	if f.sprev != nil {
		f.sprev.snext = f.snext
	} else {
		src.oldest = f.snext
	}
	if f.snext != nil {
		f.snext.sprev = f.sprev
	} else {
		src.newest = f.sprev
	}
	f.sprev, f.snext = nil, nil
}

// push appends f to src's list of flows, as its newest.
func (src *source) push(f *flow) {
	f.sprev, f.snext = src.newest, nil
	if src.newest != nil {
		src.newest.snext = f
	} else {
		src.oldest = f
	}
	src.newest = f
}

func (l *sourceList) remove(s *source) {
	if s.prev != nil {
		s.prev.next = s.next
	} else {
		l.head = s.next
	}
	if s.next != nil {
		s.next.prev = s.prev
	} else {
		l.tail = s.prev
	}
	s.prev, s.next = nil, nil
}

func (l *sourceList) pushBack(s *source) {
	s.prev, s.next = l.tail, nil
	if l.tail != nil {
		l.tail.next = s
	} else {
		l.head = s
	}
	l.tail = s
}

// sweep publishes idle flows until stop is closed. It blocks.
func (s *Server) sweep(stop <-chan struct{}) {
	every := min(max(s.cfg.IdleTimeout/4, 10*time.Millisecond), time.Second)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case now := <-tick.C:
			for _, f := range s.flows.expire(now, s.cfg.IdleTimeout) {
				s.publish(f, endIdle)
			}
			s.metrics.flowsOpen.Set(float64(s.flows.len()))
		}
	}
}

// publishAll publishes every open flow with end and returns how many.
func (s *Server) publishAll(end string) int {
	fs := s.flows.takeAll(end)
	for _, f := range fs {
		s.publish(f, end)
	}
	s.metrics.flowsOpen.Set(0)
	return len(fs)
}
