package server_test

import (
	"bufio"
	"io"
	"net/http"
	"net/netip"
	"testing"

	"github.com/originlens/originlens/internal/event"
	"github.com/originlens/originlens/internal/geo"
	"github.com/originlens/originlens/internal/policy"
	"github.com/originlens/originlens/internal/server"
)

// TestDeniedHTTPClientNotServed: a denied (embargoed) or redirected client
// that asks HTTP for /healthz, or a path that does not exist, instead of /
// got 200 "ok" or 404 on a kept-alive connection, for as many requests as
// it liked, and its event said action=connection-closed reason=served: a
// denied client counted as served. Whatever it asks, a client that is not
// served gets one response, the connection closes, and the event carries
// its decision.
func TestDeniedHTTPClientNotServed(t *testing.T) {
	for _, d := range []string{policy.Deny, policy.Redirect} {
		ts := startServer(t, func(c *server.Config) {
			c.Decider = deciderFunc(func(netip.Addr, geo.Location) policy.Decision {
				return policy.Decision{Decision: d, Rule: "embargo", Region: "eu-central-1"}
			})
		})
		wantAction, wantReason := event.ActionDenied, "denied:embargo"
		if d == policy.Redirect {
			wantAction, wantReason = event.ActionClosed, "redirect"
		}
		for i, path := range []string{"/healthz", "/nothing", "/"} {
			c := dial(t, ts.addr)
			// Three pipelined requests: only the first may be answered.
			req := "GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n"
			io.WriteString(c, req+req+req)
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("%s GET %s: %v", d, path, err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if !resp.Close {
				t.Errorf("%s GET %s = %d without Connection: close", d, path, resp.StatusCode)
			}
			if resp, err := http.ReadResponse(br, nil); err == nil {
				t.Errorf("%s GET %s: a second request on the connection was answered %d", d, path, resp.StatusCode)
			}
			ev := ts.rec.wait(i + 1)[i]
			if ev.Event.Action != wantAction || ev.Event.Reason != wantReason {
				t.Errorf("%s GET %s: event %s/%s, want %s/%s", d, path, ev.Event.Action, ev.Event.Reason, wantAction, wantReason)
			}
		}
	}
}
