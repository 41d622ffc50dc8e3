package probe

// UDP probing: each sender (a socket of its own, so a flow of its own)
// sends Count datagrams at Interval; each datagram's first line is
// "nc-probe-udp id=<run> seq=<n>", padded so that the server's whole report
// fits in its 3x amplification bound, and the server echoes that line in
// its reply (key probe). Replies are matched by sequence number: loss,
// duplicates, reordering, round-trip times and RFC 3550 interarrival
// jitter come from them, and the verdict from the report's client address.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/originlens/originlens/internal/report"
)

// UDP defaults.
const (
	// DefaultUDPSize pads each datagram: the server answers at most 3x a
	// datagram's bytes before the source has proven it receives replies,
	// and a whole report with a long IPv6 address, a city and a greeting
	// stays under 1,200 bytes.
	DefaultUDPSize = 512
	// MaxUDPSize is the largest padding, under a 1,500-byte MTU.
	MaxUDPSize = 1400
	// DefaultUDPWait is how long replies are awaited after the last
	// datagram when UDPConfig.Wait is zero.
	DefaultUDPWait = 2 * time.Second
	// udpLinePrefix starts the probe line of every datagram.
	udpLinePrefix = "nc-probe-udp"
)

// UDPConfig configures [RunUDP]. The zero value of every field but Target
// is usable.
type UDPConfig struct {
	Target      string        // host:port
	Count       int           // datagrams per sender; 0: until ctx is done
	Concurrency int           // senders, each on its own socket (its own flow); default 1
	Interval    time.Duration // between one sender's datagrams; default 100ms
	Wait        time.Duration // replies are awaited this long after the last datagram; default DefaultUDPWait
	Size        int           // datagram size in bytes, padding included; default DefaultUDPSize
	Expect      netip.Addr    // the client address the server should see; default: the probe's source (or Proxy.Src)
	Bind        netip.Addr    // local address to send from
	Family      int           // the target name's address family: 4, 6, or 0 for the first address
	Resolver    *net.Resolver // name lookups; nil: net.DefaultResolver
	// Proxy, when not nil, puts a PROXY v2 header (UDP) in front of each
	// datagram, as a trusted proxy would; version 1 has no UDP form.
	Proxy *ProxyHeader
}

// UDPResult is what a UDP run measured.
type UDPResult struct {
	Target      string
	Sent        int // datagrams sent
	Received    int // datagrams answered with a whole report (distinct sequence numbers)
	Duplicates  int // extra replies to an already answered datagram
	Reordered   int // replies that arrived after a reply to a later datagram of the same sender
	Truncated   int // replies cut to the amplification bound (truncated=1)
	OtherSource int // replies from an address other than the target's: not counted as answers
	// Unmatched counts replies holding a report but no probe line (a
	// server that read the datagram's first bytes, a PROXY header, as its
	// probe line): answers that cannot be matched to their datagram.
	Unmatched int
	RTT       Summary
	// Jitter is the RFC 3550 interarrival jitter (section 6.4.1, A.8):
	// J += (|D| - J)/16 over consecutive replies of a sender, D the
	// difference of their transit times, the last value of the senders
	// averaged.
	Jitter       time.Duration
	Last         report.Report // the last whole report
	Saw          netip.AddrPort
	Seen         []netip.Addr // every distinct client address reported
	Expected     netip.Addr
	ExpectedFrom ExpectSource
	Verdict      Verdict
	// Diagnosis is the likely cause of the verdict; Advice its sentence
	// (see [Diagnose]; no answer at all is DiagTimeout).
	Diagnosis Diagnosis
	Advice    string
	Elapsed   time.Duration
}

// LossPct is the share of datagrams never answered (a truncated reply is
// an answer, though it cannot be matched to its datagram).
func (r *UDPResult) LossPct() float64 {
	return LossPct(max(0, r.Sent-r.Received-r.Truncated-r.Unmatched), r.Sent)
}

// Explain returns the one-line explanation of the verdict.
func (r *UDPResult) Explain() string {
	if r.Verdict == NoReport {
		return fmt.Sprintf("no answer: none of %d datagrams to %s got a report (a UDP listener, a security group rule and the target's port are needed)", r.Sent, r.Target)
	}
	return Explain(r.Verdict, r.Saw.Addr(), r.Expected, r.ExpectedFrom, r.Last[report.KeyPeer])
}

// UDPLine is the probe line of datagram seq of run id.
func UDPLine(id string, seq int) string {
	return udpLinePrefix + " id=" + id + " seq=" + strconv.Itoa(seq)
}

// parseUDPLine returns the run id and sequence number of an echoed probe
// line.
func parseUDPLine(s string) (id string, seq int, ok bool) {
	f := strings.Fields(s)
	if len(f) != 3 || f[0] != udpLinePrefix || !strings.HasPrefix(f[1], "id=") || !strings.HasPrefix(f[2], "seq=") {
		return "", 0, false
	}
	n, err := strconv.Atoi(f[2][4:])
	if err != nil || n < 0 {
		return "", 0, false
	}
	return f[1][3:], n, true
}

// Datagram returns the datagram carrying line, padded with spaces after
// its newline to size bytes, behind hdr (a PROXY v2 header, or nil).
func Datagram(hdr []byte, line string, size int) []byte {
	b := make([]byte, 0, max(size, len(hdr)+len(line)+1))
	b = append(b, hdr...)
	b = append(b, line...)
	b = append(b, '\n')
	for len(b) < size {
		b = append(b, ' ')
	}
	return b
}

// sender is one socket's sends and replies. Its fields are owned by its
// receive goroutine once sending started, except sent (under mu).
type sender struct {
	mu      sync.Mutex
	sentAt  []time.Time // by sequence number
	got     []int       // replies per sequence number
	maxSeq  int         // highest sequence number answered so far
	rtts    []time.Duration
	jitter  float64 // RFC 3550 J, in nanoseconds
	transit time.Duration
	replies int
	sending bool      // datagrams are still to be sent
	res     UDPResult // counts and the last report, merged at the end
}

// unanswered reports whether some datagram sent has no answer counted
// yet: a reply that cannot be matched (truncated, no probe echo) is an
// answer only then. s.mu is held.
func (s *sender) unanswered() bool {
	return s.res.Received+s.res.Truncated+s.res.Unmatched < s.res.Sent
}

// complete reports whether every datagram is sent and answered. s.mu is
// held.
func (s *sender) complete() bool {
	return !s.sending && s.res.Received+s.res.Truncated+s.res.Unmatched >= s.res.Sent
}

// RunUDP runs cfg until every sender has sent Count datagrams and waited
// Wait for the replies, or ctx is done (what was measured so far is
// returned with ctx's error). It blocks; it fails at once, before sending,
// on a bad target or a socket error. The result has its diagnosis in every
// case: a failure to resolve, open a socket or send with no report back is
// DiagUnreachable.
func RunUDP(ctx context.Context, cfg UDPConfig) (UDPResult, error) {
	res, err := runUDP(ctx, cfg)
	if err != nil && ctx.Err() == nil && res.Last == nil {
		res.Verdict = NoReport
		res.Diagnosis = DiagUnreachable
		res.Advice = fmt.Sprintf("unreachable: could not send to %s (%s): check the target's name and port, the route, and the app's --listen-udp (APP_LISTEN_UDP)",
			cfg.Target, connectCause(err))
	}
	return res, err
}

func runUDP(ctx context.Context, cfg UDPConfig) (UDPResult, error) {
	cfg = cfg.withDefaults()
	res := UDPResult{Target: cfg.Target, ExpectedFrom: ExpectLocal}
	if cfg.Proxy != nil && cfg.Proxy.Version != 2 {
		return res, errors.New("probe: PROXY protocol over UDP exists in version 2 only")
	}
	var tm Timings
	addrs, err := resolve(ctx, cfg.Resolver, cfg.Target, cfg.Family, &tm)
	if err != nil {
		return res, err
	}
	dst := addrs[0]
	src, err := sourceFor(dst, cfg.Bind)
	if err != nil {
		return res, err
	}
	res.Expected = src
	var hdr []byte
	switch {
	case cfg.Expect.IsValid():
		res.Expected, res.ExpectedFrom = cfg.Expect.Unmap(), ExpectFlag
	case cfg.Proxy != nil:
		res.Expected, res.ExpectedFrom = cfg.Proxy.Src.Addr(), ExpectProxySrc
	}
	if cfg.Proxy != nil {
		if hdr, err = udpProxyHeader(cfg.Proxy, dst); err != nil {
			return res, err
		}
	}
	var idb [6]byte
	rand.Read(idb[:])
	id := hex.EncodeToString(idb[:])

	start := time.Now()
	// Every socket first: a failure then starts no sender.
	conns := make([]*net.UDPConn, cfg.Concurrency)
	for i := range conns {
		conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0)))
		if err != nil {
			for _, c := range conns[:i] {
				c.Close()
			}
			return res, fmt.Errorf("probe: opening a UDP socket: %w", err)
		}
		conns[i] = conn
	}
	senders := make([]*sender, cfg.Concurrency)
	var wg sync.WaitGroup
	var firstErr error
	var errOnce sync.Once
	for i, conn := range conns {
		s := &sender{}
		senders[i] = s
		wg.Go(func() {
			defer conn.Close()
			if err := s.run(ctx, cfg, conn, dst, hdr, fmt.Sprintf("%s-%d", id, i)); err != nil {
				errOnce.Do(func() { firstErr = err })
			}
		})
	}
	wg.Wait()
	res.Elapsed = time.Since(start)

	rec := NewRecorder()
	var jitter float64
	seen := map[netip.Addr]bool{}
	for _, s := range senders {
		r := &s.res
		res.Sent += r.Sent
		res.Received += r.Received
		res.Duplicates += r.Duplicates
		res.Reordered += r.Reordered
		res.Truncated += r.Truncated
		res.OtherSource += r.OtherSource
		res.Unmatched += r.Unmatched
		for _, d := range s.rtts {
			rec.Record(d)
		}
		jitter += s.jitter
		if r.Last != nil {
			res.Last, res.Saw = r.Last, r.Saw
		}
		for _, a := range r.Seen {
			if !seen[a] {
				seen[a] = true
				res.Seen = append(res.Seen, a)
			}
		}
	}
	res.RTT = rec.Summary()
	res.Jitter = time.Duration(jitter / float64(len(senders)))
	res.Verdict = Judge(res.Saw.Addr(), res.Expected, res.ExpectedFrom)
	if len(res.Seen) > 1 && res.Verdict == Preserved {
		// One sender's report matched; another's did not.
		for _, a := range res.Seen {
			if a != res.Expected {
				res.Verdict, res.Saw = NotPreserved, netip.AddrPortFrom(a, 0)
			}
		}
	}
	var pv byte
	if cfg.Proxy != nil {
		pv = cfg.Proxy.Version
	}
	res.Diagnosis, res.Advice = diagnoseUDP(&res, pv)
	if firstErr == nil && ctx.Err() != nil {
		firstErr = ctx.Err()
	}
	return res, firstErr
}

// diagnoseUDP is [Diagnose] for a UDP run: from the last report, or, with
// none, DiagTimeout and the settings that make a datagram go unanswered.
func diagnoseUDP(r *UDPResult, pv byte) (Diagnosis, string) {
	if r.Last != nil && r.Saw.IsValid() {
		return Diagnose(Attempt{Target: r.Target, Report: r.Last, Saw: r.Saw, Expected: r.Expected, Verdict: r.Verdict}, pv)
	}
	if r.Last != nil {
		return DiagNoReport, fmt.Sprintf("no-report: %s answered a report without a usable client address (client=%q): not an originlens server", r.Target, r.Last[report.KeyClient])
	}
	other := ""
	if r.OtherSource > 0 {
		other = fmt.Sprintf(" (%d replies came from another address than %s: a host answering from the wrong address, or NAT)", r.OtherSource, r.Target)
	}
	header := "a datagram without a PROXY v2 header is dropped by the app with --proxy-protocol required, or trusted from a peer in --trusted-proxies (an NLB sends none over UDP)"
	if pv != 0 {
		header = "a datagram with a PROXY v2 header is dropped by the app unless its source is in --trusted-proxies (APP_TRUSTED_PROXIES)"
	}
	return DiagTimeout, fmt.Sprintf("timeout: none of %d datagrams to %s got a report within the wait%s: check the app's --listen-udp (APP_LISTEN_UDP), "+
		"the accelerator's UDP listener and the security groups' UDP rules for that port; %s: check %s", r.Sent, r.Target, other, header, settingMode)
}

func (c UDPConfig) withDefaults() UDPConfig {
	if c.Concurrency < 1 {
		c.Concurrency = 1
	}
	if c.Interval <= 0 {
		c.Interval = 100 * time.Millisecond
	}
	if c.Wait <= 0 {
		c.Wait = DefaultUDPWait
	}
	if c.Size <= 0 {
		c.Size = DefaultUDPSize
	}
	c.Size = min(c.Size, MaxUDPSize)
	return c
}

// sourceFor returns the address datagrams to dst leave from: bind when
// valid, else the kernel's choice for dst (found by connecting a UDP
// socket, which sends nothing).
func sourceFor(dst netip.AddrPort, bind netip.Addr) (netip.Addr, error) {
	if bind.IsValid() {
		return bind.Unmap(), nil
	}
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(dst))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("probe: no route to %s: %w", dst, err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap(), nil
}

// udpProxyHeader is the PROXY v2 header claiming p.Src for UDP to p.Dst
// (dst when unset).
func udpProxyHeader(p *ProxyHeader, dst netip.AddrPort) ([]byte, error) {
	d := p.Dst
	if !d.IsValid() {
		d = dst
	}
	tp := proxyproto.UDPv4
	if p.Src.Addr().Is6() {
		tp = proxyproto.UDPv6
	}
	if p.Src.Addr().Is6() != d.Addr().Is6() {
		return nil, fmt.Errorf("probe: PROXY source %s and destination %s differ in family", p.Src, d)
	}
	h := &proxyproto.Header{Version: 2, Command: proxyproto.PROXY, TransportProtocol: tp,
		SourceAddr: net.UDPAddrFromAddrPort(p.Src), DestinationAddr: net.UDPAddrFromAddrPort(d)}
	b, err := h.Format()
	if err != nil {
		return nil, fmt.Errorf("probe: PROXY header: %w", err)
	}
	return b, nil
}

// run sends one sender's datagrams and receives their replies until the
// last send plus cfg.Wait, or ctx is done.
func (s *sender) run(ctx context.Context, cfg UDPConfig, conn *net.UDPConn, dst netip.AddrPort, hdr []byte, id string) error {
	recvDone := make(chan struct{})
	go func() {
		defer close(recvDone)
		s.receive(conn, dst, id)
	}()
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()

	s.mu.Lock()
	s.sending = true
	s.mu.Unlock()
	size := cfg.Size
	var sendErr error
	tick := time.NewTicker(cfg.Interval)
	defer tick.Stop()
	for seq := 0; cfg.Count == 0 || seq < cfg.Count; seq++ {
		if seq > 0 {
			select {
			case <-ctx.Done():
			case <-tick.C:
			}
		}
		if ctx.Err() != nil {
			break
		}
		s.mu.Lock()
		if s.res.Truncated > 0 && size < MaxUDPSize {
			size = min(2*size, MaxUDPSize) // the report did not fit: pad more
		}
		s.sentAt = append(s.sentAt, time.Now())
		s.got = append(s.got, 0)
		s.res.Sent++
		s.mu.Unlock()
		if _, err := conn.WriteToUDPAddrPort(Datagram(hdr, UDPLine(id, seq), size), dst); err != nil {
			sendErr = fmt.Errorf("probe: sending to %s: %w", dst, err)
			break
		}
	}
	s.mu.Lock()
	s.sending = false
	complete := s.complete()
	s.mu.Unlock()
	switch {
	case complete:
		conn.SetReadDeadline(time.Unix(1, 0)) // nothing left to wait for
	case ctx.Err() == nil:
		conn.SetReadDeadline(time.Now().Add(cfg.Wait))
	}
	<-recvDone
	return sendErr
}

// receive reads replies until the read deadline and accounts for them.
func (s *sender) receive(conn *net.UDPConn, dst netip.AddrPort, id string) {
	buf := make([]byte, 65536)
	for {
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		at := time.Now()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, net.ErrClosed) {
				return
			}
			continue // an ICMP error (port unreachable) reported on the socket
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		s.mu.Lock()
		s.reply(buf[:n], from, dst, id, at)
		complete := s.complete()
		s.mu.Unlock()
		if complete {
			return // run saw it incomplete and set the Wait deadline
		}
	}
}

// reply accounts for one reply received at at. s.mu is held.
func (s *sender) reply(b []byte, from, dst netip.AddrPort, id string, at time.Time) {
	if from != dst {
		s.res.OtherSource++
		return
	}
	line, _, _ := strings.Cut(string(b), "\n")
	rep, err := report.ParseLine(line)
	truncated := rep != nil && rep[report.KeyTruncated] == "1" ||
		errors.Is(err, report.ErrMissing) && strings.Contains(line, report.KeyTruncated+"=1")
	if truncated {
		if s.unanswered() {
			s.res.Truncated++
		} else {
			s.res.Duplicates++ // more unmatched replies than datagrams
		}
		return
	}
	if err != nil {
		return
	}
	if _, echoed := rep[report.KeyProbe]; !echoed {
		// A report that echoes no probe line: the server took other bytes
		// for the first line (a PROXY header it does not read). It is an
		// answer for the verdict, not for loss or round-trip times.
		if s.unanswered() {
			s.res.Unmatched++
		} else {
			s.res.Duplicates++
		}
		s.seen(rep)
		return
	}
	rid, seq, ok := parseUDPLine(rep[report.KeyProbe])
	if !ok || rid != id || seq >= len(s.sentAt) {
		return
	}
	s.got[seq]++
	if s.got[seq] > 1 {
		s.res.Duplicates++
		return
	}
	s.res.Received++
	if s.replies > 0 && seq < s.maxSeq {
		s.res.Reordered++
	}
	s.maxSeq = max(s.maxSeq, seq)
	transit := at.Sub(s.sentAt[seq])
	s.rtts = append(s.rtts, transit)
	if s.replies > 0 {
		d := transit - s.transit
		if d < 0 {
			d = -d
		}
		s.jitter += (float64(d) - s.jitter) / 16
	}
	s.transit = transit
	s.replies++
	s.seen(rep)
}

// seen makes rep the sender's last report and records its client address.
// s.mu is held.
func (s *sender) seen(rep report.Report) {
	s.res.Last = rep
	if saw, err := netip.ParseAddrPort(rep[report.KeyClient]); err == nil {
		saw = netip.AddrPortFrom(saw.Addr().Unmap(), saw.Port())
		s.res.Saw = saw
		known := false
		for _, a := range s.res.Seen {
			known = known || a == saw.Addr()
		}
		if !known {
			s.res.Seen = append(s.res.Seen, saw.Addr())
		}
	}
}
