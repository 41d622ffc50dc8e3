package probe

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"

	"github.com/originlens/originlens/internal/report"
)

// Diagnosis is the likely cause of a verdict, as a stable code (the
// diagnosis key of nc-probe --json and the CSV column).
type Diagnosis string

// Diagnosis codes. Each comes with one sentence from [Diagnose] that names
// the AWS attribute or app flag to check.
const (
	// DiagPreserved: the server saw the client's own address.
	DiagPreserved Diagnosis = "preserved"
	// DiagSourceNAT: the server saw another address (a load balancer node,
	// a NAT, a proxy; a hairpin; an IPv6 client on an IPv4-only path).
	DiagSourceNAT Diagnosis = "source-nat"
	// DiagHeaderIgnored: the probe sent a PROXY header and the server used
	// the socket address or read the header as data.
	DiagHeaderIgnored Diagnosis = "proxy-header-ignored"
	// DiagHeaderRefused: the server refused the PROXY header (this host, or
	// a proxy in between, is not a trusted proxy; or it was malformed).
	DiagHeaderRefused Diagnosis = "proxy-header-refused"
	// DiagHeaderExpected: the server wanted a PROXY header and got none.
	DiagHeaderExpected Diagnosis = "proxy-header-expected"
	// DiagNoReport: connected, but no report came (closed, or a line that
	// is not a report).
	DiagNoReport Diagnosis = "no-report"
	// DiagUnreachable: no connection (refused, no route, no address).
	DiagUnreachable Diagnosis = "unreachable"
	// DiagTimeout: no handshake or no report within the attempt's timeout.
	DiagTimeout Diagnosis = "timeout"
	// DiagCannotTell: behind NAT without an expected address (verdict
	// unknown).
	DiagCannotTell Diagnosis = "cannot-tell"
)

// Failed reports whether d is a failure of the path (anything but
// preserved and cannot-tell): what a watch counts as down.
func (d Diagnosis) Failed() bool { return d != DiagPreserved && d != DiagCannotTell && d != "" }

// AWS settings and app flags the sentences name, in one place.
const (
	settingPreserve = "client IP preservation (Global Accelerator endpoint ClientIPPreservationEnabled, NLB target group attribute preserve_client_ip.enabled)"
	settingPP2      = "the NLB target group attribute proxy_protocol_v2.enabled"
	settingMode     = "the app's --proxy-protocol (APP_PROXY_PROTOCOL)"
	settingTrusted  = "the app's --trusted-proxies (APP_TRUSTED_PROXIES)"
)

// Diagnose returns the diagnosis of one attempt and its sentence: the
// likely cause and the setting to check. proxyVersion is the PROXY header
// version the probe sent (0: none).
func Diagnose(a Attempt, proxyVersion byte) (Diagnosis, string) {
	if a.Report != nil && a.Saw.IsValid() {
		return diagnoseReport(a, proxyVersion)
	}
	return diagnoseError(a, proxyVersion)
}

func diagnoseReport(a Attempt, pv byte) (Diagnosis, string) {
	saw, want := a.Saw.Addr(), a.Expected
	via, peer := a.Report[report.KeyVia], a.Report[report.KeyPeer]
	switch a.Verdict {
	case Preserved:
		return DiagPreserved, fmt.Sprintf("preserved: the server saw %s, the client's own address (via %s); nothing to change", saw, via)
	case Unknown:
		return DiagCannotTell, fmt.Sprintf("cannot-tell: this host's address %s is private (behind NAT) and the server saw %s; rerun with --expect-ip YOUR.PUBLIC.IP", want, saw)
	}
	if pv != 0 && (a.Report[report.KeyProxy] == report.ProxyIgnored || via == "direct") {
		how := "used the socket address"
		if a.Report[report.KeyProxy] == report.ProxyIgnored {
			how = "read it as data (proxy=ignored)"
		}
		if via != "direct" {
			how = fmt.Sprintf("read a PROXY header from the proxy in front (%s, peer %s) and passed this one on as data", via, peer)
		}
		return DiagHeaderIgnored, fmt.Sprintf("proxy-header-ignored: the probe sent a PROXY v%d header claiming %s, but the server %s and saw %s; "+
			"the app reads PROXY headers only with --proxy-protocol required or trusted: set %s to match %s", pv, want, how, saw, settingMode, settingPP2)
	}
	if pv == 0 && a.Report[report.KeyProxy] == report.ProxyIgnored {
		return DiagHeaderIgnored, fmt.Sprintf("proxy-header-ignored: a load balancer or proxy in front (the server's peer %s) sent a PROXY header, but the server read it as data (proxy=ignored) and saw %s instead of %s; "+
			"set %s to required or trusted (with that peer's network in %s) to match %s", peer, saw, want, settingMode, settingTrusted, settingPP2)
	}
	return DiagSourceNAT, fmt.Sprintf("source-nat: the server saw %s instead of %s: %s; check %s, or turn on %s and set %s to trusted with the NLB subnets in %s",
		saw, want, natKind(saw, want, a.Report), settingPreserve, settingPP2, settingMode, settingTrusted)
}

// natKind describes the address the server saw in place of the client's.
func natKind(saw, want netip.Addr, rep report.Report) string {
	server := netip.Addr{}
	if ap, err := netip.ParseAddrPort(rep[report.KeyServer]); err == nil {
		server = ap.Addr().Unmap()
	}
	via := rep[report.KeyVia]
	switch {
	case want.Is6() && saw.Is4():
		return "an IPv4 address for an IPv6 client: the path behind a dual-stack front is IPv4-only (the accelerator or NLB translated the connection)"
	case server.IsValid() && want == server && !want.IsLoopback(): // on loopback every path is on one host
		return "this probe runs on the target itself, a hairpin (an NLB with client IP preservation does not loop a connection back to its source, so it was translated): probe from another host"
	case via != "" && via != "direct":
		return fmt.Sprintf("a proxy in front sent a PROXY header (%s) naming that address, so it did not learn the client's", via)
	case server.IsValid() && sameNetwork(saw, server):
		return fmt.Sprintf("%s, in the server's own network, looks like a load balancer node", classOf(saw))
	case saw.IsPrivate() || saw.IsLoopback():
		return fmt.Sprintf("%s, looks like a load balancer or NAT node", classOf(saw))
	}
	return "an address that is neither private nor in the server's network: a proxy or NAT in between"
}

func classOf(a netip.Addr) string {
	switch {
	case a.IsLoopback():
		return "a loopback address"
	case a.IsPrivate():
		return "a private address"
	}
	return "an address"
}

// sameNetwork reports whether a and b share a /24 (IPv4) or a /64 (IPv6).
func sameNetwork(a, b netip.Addr) bool {
	bits := 24
	if a.Is6() {
		bits = 64
	}
	if a.Is4() != b.Is4() {
		return false
	}
	pa, _ := a.Prefix(bits)
	return pa.Contains(b)
}

func diagnoseError(a Attempt, pv byte) (Diagnosis, string) {
	err := a.Err
	if err == nil {
		return DiagNoReport, "no-report: no attempt finished"
	}
	var refused *RefusedError
	if errors.As(err, &refused) {
		switch refused.Code {
		case report.ErrorHeaderRequired:
			return DiagHeaderExpected, fmt.Sprintf("proxy-header-expected: the server wants a PROXY header and got none (error=%s): turn on %s, "+
				"or set %s to off (or trusted with the NLB subnets in %s) if the path preserves client IPs without it", refused.Code, settingPP2, settingMode, settingTrusted)
		case report.ErrorHeaderUntrusted:
			who := "this host"
			if refused.Peer != "" {
				who = "this host (the server saw the peer " + refused.Peer + ")"
			}
			if pv == 0 {
				who = "a proxy in between (the server saw the peer " + refused.Peer + ")"
			}
			return DiagHeaderRefused, fmt.Sprintf("proxy-header-refused: the server refused the PROXY header (error=%s): %s is not a trusted proxy; "+
				"add its address (on AWS, the NLB subnets' CIDRs) to %s with --proxy-protocol trusted", refused.Code, who, settingTrusted)
		}
		return DiagHeaderRefused, fmt.Sprintf("proxy-header-refused: the server refused the PROXY header (error=%s): it is malformed or not what the server reads; "+
			"check %s against %s", refused.Code, settingMode, settingPP2)
	}
	stage := StageOf(err)
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		if stage == StageConnect {
			return DiagTimeout, fmt.Sprintf("timeout: no answer to the TCP handshake with %s within the timeout: a security group or network ACL dropping the port, or no healthy endpoint behind the accelerator or NLB (check the listener port and the target group's health)", a.Target)
		}
		return DiagTimeout, fmt.Sprintf("timeout: connected to %s but no report within the timeout: a server that waits (for a PROXY header the NLB does not send: compare %s with %s) or not an originlens server", a.Target, settingMode, settingPP2)
	}
	if stage == StageConnect {
		return DiagUnreachable, fmt.Sprintf("unreachable: could not connect to %s (%s): check that the app listens on that port (--listen, APP_LISTEN), the listener and security group ports, and the endpoint's health", a.Target, connectCause(err))
	}
	if a.Report != nil { // a later stage failed: the report is there, but ClientAddr could not read it
		return DiagNoReport, fmt.Sprintf("no-report: %s answered a report without a usable client address (%v): not an originlens server", a.Target, err)
	}
	var notReport *NotReportError
	what := "the server closed the connection without a line"
	if errors.As(err, &notReport) {
		what = fmt.Sprintf("its first line is not a report: %q", notReport.Line)
	} else if !errors.Is(err, ErrClosed) {
		what = err.Error()
	}
	return DiagNoReport, fmt.Sprintf("no-report: connected to %s, but %s: not an originlens server, or one waiting for a PROXY header the NLB does not send "+
		"(compare %s with %s)", a.Target, what, settingMode, settingPP2)
}

// connectCause names a connect failure in a few words.
func connectCause(err error) string {
	var dnsErr *net.DNSError
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused: nothing listens there"
	case errors.Is(err, ErrNoAddress):
		return "no address of that family"
	case errors.As(err, &dnsErr):
		return "the name does not resolve: " + dnsErr.Err
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "no route"
	}
	return err.Error()
}
