package probe

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"
)

// TestRunUDPUnmatchedRepliesCappedBySent: replies that cannot be matched
// to their datagram (truncated=1, or no probe echo) answer at most the
// datagrams still unanswered; more of them are duplicates (a network that
// duplicates, or a hostile server). Five truncated replies per datagram
// used to count as five answers: 0% loss, and the run stopped waiting
// after the first datagram's replies.
func TestRunUDPUnmatchedRepliesCappedBySent(t *testing.T) {
	srv, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for i := 0; i < 2; i++ { // answer the first 2 of 4 datagrams, 5 times each
			_, from, err := srv.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			for range 5 {
				srv.WriteToUDPAddrPort([]byte("client=127.0.0.1:1 truncated=1\n"), from)
			}
		}
	}()
	res, err := RunUDP(context.Background(), UDPConfig{Target: srv.LocalAddr().String(), Count: 4, Interval: 20 * time.Millisecond, Wait: 300 * time.Millisecond})
	<-done
	if err != nil {
		t.Fatal(err)
	}
	// Which datagram a truncated reply answers is unknown: each counts for
	// one still unanswered when it arrives, so at most Sent in all, and at
	// least the 2 the server answered; the rest are duplicates.
	if res.Sent != 4 || res.Truncated < 2 || res.Truncated > res.Sent || res.Truncated+res.Duplicates != 10 {
		t.Errorf("sent %d, truncated %d, duplicates %d, loss %.1f%%; want 4 sent, 2 to 4 truncated, 10 replies in all", res.Sent, res.Truncated, res.Duplicates, res.LossPct())
	}
}
