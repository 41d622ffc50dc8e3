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
	endEvicted  = "evicted"      // the oldest idle flow, dropped for a new one over MaxFlows
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
	key        flowKey
	prev, next *flow // the table's list, least recently seen first

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

// flowTable holds the open flows in a map and in a list ordered by last
// datagram, so that the idle ones are found at the front. It is safe for
// concurrent use.
type flowTable struct {
	mu         sync.Mutex
	m          map[flowKey]*flow
	head, tail *flow
	max        int
}

func (t *flowTable) init(max int) {
	t.m = make(map[flowKey]*flow)
	t.max = max
}

func (t *flowTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.m)
}

// touch records a datagram of n bytes whose probe line is line from origin
// o at now, in a new flow when there is none (over MaxFlows, the least
// recently seen flow is dropped first, and published once its datagrams
// are done), and returns the flow. The caller must call done with it once
// it has accounted for the datagram's reply.
func (t *flowTable) touch(s *Server, sock *socket, o origin.Origin, dst netip.AddrPort, now time.Time, n int, line []byte) *flow {
	k := keyOf(o)
	var evicted *flow
	t.mu.Lock()
	f := t.m[k]
	if f == nil {
		// Locate and decide without the lock.
		t.mu.Unlock()
		nf := s.buildFlow(sock, o, dst, now)
		t.mu.Lock()
		if f = t.m[k]; f == nil {
			f = nf
			if len(t.m) >= t.max && t.head != nil {
				if e := t.head; t.take(e, endEvicted) {
					evicted = e
				}
			}
			t.m[k] = f
			t.pushBack(f)
			s.metrics.flowsOpen.Set(float64(len(t.m)))
		}
	}
	f.refs++
	f.inPackets++
	f.inBytes += int64(n)
	if now.After(f.last) {
		f.last = now
	}
	t.moveToBack(f)
	if len(line) > 0 && !f.proven.Load() && bytes.Contains(line, f.proof) {
		f.proven.Store(true)
	}
	t.mu.Unlock()
	if evicted != nil {
		s.publish(evicted, endEvicted)
	}
	return f
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
