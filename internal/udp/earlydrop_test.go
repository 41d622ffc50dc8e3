package udp

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/originlens/originlens/internal/event"
)

// TestSpoofedFloodEarlyDrop: in a table of 50 flows, 20 clients (each its
// own address, one flow each) send a datagram every 50 ms while a flood
// sends 5,000 datagrams, each from a new address (its own source, one
// flow, one datagram): more sources than the table holds, so per-source
// fairness cannot choose. The full table drops the oldest flow that has
// seen one datagram and not proven its source: every client keeps its
// flow (one event at the end, with all its datagrams and replies), every
// eviction is a flood flow of one datagram, and each is counted as an
// early drop. On the code before the early drop the table evicted the
// least recently seen source's flow: the flood evicted the clients' flows
// between two of their datagrams (several events each, ending evicted).
func TestSpoofedFloodEarlyDrop(t *testing.T) {
	const (
		maxFlows     = 50
		good         = 20
		minPerGood   = 40 // 2 s at 50 ms, and on until the flood ended
		maxPerGood   = 2000
		flood, batch = 5000, 50
		every        = 50 * time.Millisecond
	)
	r := start(t, Config{MaxFlows: maxFlows}, "")

	type tally struct {
		conn                   *net.UDPConn
		addr                   netip.AddrPort
		sentPackets, sentBytes int64
		recvPackets, recvBytes int64
	}
	tallies := make([]tally, good)
	for i := range tallies {
		tallies[i].conn = client(t, fmt.Sprintf("127.0.7.%d", 1+i))
		tallies[i].addr = tallies[i].conn.LocalAddr().(*net.UDPAddr).AddrPort()
	}
	var floodDone atomic.Bool
	var started sync.WaitGroup // each client's first two datagrams answered
	started.Add(good)
	var wg sync.WaitGroup
	deadline := time.Now().Add(2 * waitFor)
	for i := range tallies {
		tl := &tallies[i]
		wg.Go(func() {
			tick := time.NewTicker(every)
			defer tick.Stop()
			for seq := 0; seq < maxPerGood && (seq < minPerGood || !floodDone.Load()) && time.Now().Before(deadline); seq++ {
				d := padded(fmt.Sprintf("good %d seq %d", i, seq), 200)
				reply, _, ok := exchange(t, tl.conn, r.addr, d, waitFor)
				tl.sentPackets++
				tl.sentBytes += int64(len(d))
				if !ok {
					t.Errorf("good client %d: no reply to datagram %d", i, seq)
				} else {
					tl.recvPackets++
					tl.recvBytes += int64(len(reply))
				}
				if seq == 1 {
					started.Done()
				}
				if !ok {
					return
				}
				<-tick.C
			}
		})
	}
	started.Wait()
	if t.Failed() {
		floodDone.Store(true)
		wg.Wait()
		return
	}

	// The flood: one datagram from each of 5,000 addresses
	// (127.0.10.1-127.0.29.250), in batches, each datagram's reply read
	// before the next batch, so that the kernel drops none.
	floodAddr := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{127, 0, byte(10 + i/250), byte(1 + i%250)}) }
	buf := make([]byte, 4096)
	for n := 0; n < flood && !t.Failed(); n += batch {
		conns := make([]*net.UDPConn, 0, batch)
		for i := n; i < n+batch; i++ {
			c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(floodAddr(i), 0)))
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, c)
			if _, err := c.WriteToUDPAddrPort(padded(fmt.Sprint("flood ", i), 100), r.addr); err != nil {
				t.Fatal(err)
			}
		}
		for i, c := range conns {
			c.SetReadDeadline(time.Now().Add(waitFor))
			if _, err := c.Read(buf); err != nil {
				t.Errorf("flood datagram %d: no reply: %v", n+i, err)
			}
			c.Close()
		}
		if got := r.srv.Flows(); got > maxFlows {
			t.Errorf("Flows() = %d over MaxFlows %d", got, maxFlows)
		}
	}
	floodDone.Store(true)
	wg.Wait()
	r.stop()

	byClient := map[netip.AddrPort][]event.Event{}
	floodEvents, floodEvicted, evicted := 0, 0, 0
	for _, ev := range r.rec.all() {
		if ev.Flow.End == endEvicted {
			evicted++
		}
		if ev.Source.IP.As4()[2] >= 10 {
			floodEvents++
			if ev.Flow.End == endEvicted {
				floodEvicted++
				if ev.Source.Packets != 1 {
					t.Errorf("evicted flood flow %s had %d datagrams, want 1", flowKeyOf(ev), ev.Source.Packets)
				}
			}
			continue
		}
		byClient[flowKeyOf(ev)] = append(byClient[flowKeyOf(ev)], ev)
	}
	for i, tl := range tallies {
		evs := byClient[tl.addr]
		if len(evs) != 1 {
			ends := make([]string, 0, len(evs))
			for _, ev := range evs {
				ends = append(ends, fmt.Sprintf("%s after %d datagrams", ev.Flow.End, ev.Source.Packets))
			}
			t.Errorf("good client %d (%s): %d events %v, want 1 (its flow kept)", i, tl.addr, len(evs), ends)
			continue
		}
		ev := evs[0]
		if ev.Flow.End != endShutdown || ev.Source.Packets != tl.sentPackets || ev.Source.Bytes != tl.sentBytes ||
			ev.Destination.Packets != tl.recvPackets || ev.Destination.Bytes != tl.recvBytes {
			t.Errorf("good client %d: event end %s in %d/%dB out %d/%dB; want shutdown, sent %d/%dB, received %d/%dB", i,
				ev.Flow.End, ev.Source.Packets, ev.Source.Bytes, ev.Destination.Packets, ev.Destination.Bytes,
				tl.sentPackets, tl.sentBytes, tl.recvPackets, tl.recvBytes)
		}
	}
	if evicted != floodEvicted {
		t.Errorf("%d flows evicted, %d of them the flood's", evicted, floodEvicted)
	}
	if floodEvents != flood {
		t.Errorf("flood: %d events, want %d (one per source)", floodEvents, flood)
	}
	// The table held the 20 clients and 30 flood flows: every flood flow
	// but the last 30 was dropped early, and those at shutdown.
	early := value(r.srv.metrics.earlyDrops)
	if want := flood - (maxFlows - good); floodEvicted != want || early != float64(want) || flowsEnded(r.srv, endEvicted) != float64(want) {
		t.Errorf("flood flows evicted %d, early drops counted %v, flows_total{evicted} %v; want %d each",
			floodEvicted, early, flowsEnded(r.srv, endEvicted), want)
	}
	t.Logf("clients sent %d datagrams each or more; %d flood flows evicted early", tallies[0].sentPackets, floodEvicted)
}
