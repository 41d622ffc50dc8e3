package udp

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
)

// TestEvictionKeepsRepliesCounted: with the flow table full, a flow can be
// evicted (and published) by another reader between its datagram and the
// reply; the reply must still be in the flow's event. Eight clients take
// turns in a table of one flow, answered by four readers: every client's
// events together must count exactly the replies it received.
func TestEvictionKeepsRepliesCounted(t *testing.T) {
	const clients, perClient = 8, 300
	r := start(t, Config{MaxFlows: 1, Readers: 4}, "")
	type tally struct {
		addr                   netip.AddrPort
		sentPackets, sentBytes int64
		recvPackets, recvBytes int64
	}
	tallies := make([]tally, clients)
	var wg sync.WaitGroup
	for i := range clients {
		c := client(t, fmt.Sprintf("127.0.2.%d", 1+i))
		tallies[i].addr = c.LocalAddr().(*net.UDPAddr).AddrPort()
		wg.Go(func() {
			tl := &tallies[i]
			for seq := range perClient {
				d := padded(fmt.Sprintf("p %d %d", i, seq), 300)
				reply, _, ok := exchange(t, c, r.addr, d, waitFor)
				tl.sentPackets++
				tl.sentBytes += int64(len(d))
				if !ok {
					t.Errorf("client %d seq %d: no reply", i, seq)
					return
				}
				tl.recvPackets++
				tl.recvBytes += int64(len(reply))
			}
		})
	}
	wg.Wait()
	r.stop()
	type sums struct{ inP, inB, outP, outB int64 }
	got := map[netip.AddrPort]*sums{}
	for _, ev := range r.rec.all() {
		k := netip.AddrPortFrom(ev.Source.IP, ev.Source.Port)
		if got[k] == nil {
			got[k] = &sums{}
		}
		s := got[k]
		s.inP += ev.Source.Packets
		s.inB += ev.Source.Bytes
		s.outP += ev.Destination.Packets
		s.outB += ev.Destination.Bytes
	}
	for i, tl := range tallies {
		s := got[tl.addr]
		if s == nil {
			t.Errorf("client %d (%s): no event", i, tl.addr)
			continue
		}
		if s.inP != tl.sentPackets || s.inB != tl.sentBytes || s.outP != tl.recvPackets || s.outB != tl.recvBytes {
			t.Errorf("client %d: events count in %d/%dB out %d/%dB; client sent %d/%dB, received %d/%dB", i,
				s.inP, s.inB, s.outP, s.outB, tl.sentPackets, tl.sentBytes, tl.recvPackets, tl.recvBytes)
		}
	}
}
