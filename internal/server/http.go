package server

import (
	"bufio"
	"bytes"
	"errors"
	"html/template"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/originlens/originlens/internal/event"
	"github.com/originlens/originlens/internal/policy"
	"github.com/originlens/originlens/internal/report"
)

// maxDiscardBody is how much of an unwanted request body is read and thrown
// away to keep the connection; a larger body closes it.
const maxDiscardBody = 64 << 10

// serveHTTP answers HTTP/1.x requests on c until the client closes, asks to
// close, stays idle past IdleTimeout, or the server drains:
//
//	GET|HEAD /         the report: JSON, or HTML when Accept prefers text/html
//	                   (403 and close for decision=deny, close for redirect)
//	GET|HEAD /healthz  200
//	other methods      405;  other paths  404
//
// Requests are read with net/http's parser (http.ReadRequest) under the
// MaxHeaderBytes budget and written with http.Response.Write. The first
// request must arrive within the first-bytes deadline that handle set.
func (s *Server) serveHTTP(c *conn, br *bufio.Reader, rep report.Report, d policy.Decision) ending {
	var out bytes.Buffer
	end := ending{event.ActionClosed, event.OutcomeSuccess, reasonServed}
	for n := 0; ; n++ {
		if n > 0 {
			// Keep-alive: wait for the next request; the drain may close
			// the connection while it is idle.
			if !c.state.CompareAndSwap(stateActive, stateIdle) || s.draining.Load() {
				return end
			}
			c.SetDeadline(time.Now().Add(s.cfg.IdleTimeout))
			_, err := br.Peek(1)
			if !c.state.CompareAndSwap(stateIdle, stateActive) {
				return end // closed by the drain
			}
			if err != nil {
				return end // the client closed or went idle: a normal end
			}
		}
		req, err := readRequest(c, br)
		if err != nil {
			code := http.StatusBadRequest
			if errors.Is(err, errHeaderTooLarge) {
				code = http.StatusRequestHeaderFieldsTooLarge
			}
			if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || s.hardStop.Load() {
				// Nothing to answer: the request never completed.
				switch {
				case n > 0:
					return end
				case errors.Is(err, os.ErrDeadlineExceeded) || s.hardStop.Load():
					return s.readFailed(err, true)
				}
				return ending{event.ActionClosed, event.OutcomeFailure, reasonBadRequest}
			}
			c.SetDeadline(time.Now().Add(s.cfg.IdleTimeout))
			writeResponse(c, &out, nil, code, "text/plain; charset=utf-8", []byte(http.StatusText(code)+"\n"), true)
			if n == 0 {
				return ending{event.ActionClosed, event.OutcomeFailure, reasonBadRequest}
			}
			return end
		}
		c.SetDeadline(time.Now().Add(s.cfg.IdleTimeout))
		closeAfter := req.Close || s.draining.Load()
		switch {
		case req.Body == http.NoBody || req.Body == nil:
		case strings.EqualFold(req.Header.Get("Expect"), "100-continue"):
			// The client waits before sending the body we do not want:
			// answer and close instead of asking for it.
			closeAfter = true
		default:
			// Read a small unwanted body so the connection can be kept;
			// close after a large one or a broken one.
			if m, err := io.CopyN(io.Discard, req.Body, maxDiscardBody+1); m > maxDiscardBody || err != nil && err != io.EOF {
				closeAfter = true
			}
		}

		code, ctype, body := http.StatusOK, "text/plain; charset=utf-8", []byte("ok\n")
		h := http.Header{}
		switch {
		case req.URL.Path != "/" && req.URL.Path != "/healthz":
			code, body = http.StatusNotFound, []byte("404 page not found\n")
		case req.Method != http.MethodGet && req.Method != http.MethodHead:
			code, body = http.StatusMethodNotAllowed, []byte("405 method not allowed\n")
			h.Set("Allow", "GET, HEAD")
		case req.URL.Path == "/healthz":
		default:
			h.Set("Vary", "Accept")
			if prefersHTML(req.Header.Values("Accept")) {
				ctype, body = "text/html; charset=utf-8", renderHTML(rep)
			} else {
				ctype = "application/json"
				body, _ = rep.MarshalJSON() // a map of strings always encodes
				body = append(body, '\n')
			}
			end = decided(d)
			if end.reason != reasonServed {
				closeAfter = true
				if d.Decision == policy.Deny {
					code = http.StatusForbidden
				}
			}
		}
		// A client the rules deny or redirect gets this one response
		// whatever it asked (/healthz, a missing path), then the close, and
		// its event says its decision: never kept alive nor counted as
		// served. (Over a per-source limit, /healthz stays a health
		// check's 200 and keeps the connection: see
		// TestHAProxyHTTPCheckThroughLocal.)
		if e := decided(d); e.reason != reasonServed && e.reason != reasonRateLimited {
			end, closeAfter = e, true
		}
		if !req.ProtoAtLeast(1, 1) && !closeAfter {
			// HTTP/1.0 keep-alive must be confirmed; HTTP/1.1 is kept by
			// default and Response.Write adds "Connection: close" itself.
			h.Set("Connection", "keep-alive")
		}
		if err := writeResponseH(c, &out, req, h, code, ctype, body, closeAfter); err != nil {
			return s.readFailed(err, false)
		}
		if closeAfter {
			return end
		}
	}
}

// readRequest reads one request's header from br under the MaxHeaderBytes
// budget, counting the bytes br already holds (the sniff's, or a pipelined
// request's) as well as those it reads from c, so that the limit is exact
// however the bytes arrived: a header of MaxHeaderBytes is read, one more
// byte is errHeaderTooLarge.
func readRequest(c *conn, br *bufio.Reader) (*http.Request, error) {
	held := int64(br.Buffered())
	budget := max(MaxHeaderBytes-held, 0)
	c.lr.n, c.lr.over = budget, false
	req, err := http.ReadRequest(br)
	read := budget - c.lr.n
	c.lr.n = noLimit64
	switch {
	case err != nil && c.lr.over:
		// The parser wanted more than the limit. (It may report the
		// truncated last line as malformed instead of the read error.)
		return nil, errHeaderTooLarge
	case err == nil && held+read-int64(br.Buffered()) > MaxHeaderBytes:
		// The header taken out of br: only a reader buffer larger than
		// the limit (a --max-line over it) can hold more than the budget.
		return nil, errHeaderTooLarge
	}
	return req, err
}

func writeResponse(c *conn, out *bytes.Buffer, req *http.Request, code int, ctype string, body []byte, closeAfter bool) error {
	return writeResponseH(c, out, req, http.Header{}, code, ctype, body, closeAfter)
}

// writeResponseH writes one response with a single Write.
func writeResponseH(c *conn, out *bytes.Buffer, req *http.Request, h http.Header, code int, ctype string, body []byte, closeAfter bool) error {
	h.Set("Content-Type", ctype)
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	resp := http.Response{
		StatusCode:    code,
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        h,
		ContentLength: int64(len(body)),
		Body:          io.NopCloser(bytes.NewReader(body)),
		Close:         closeAfter,
		Request:       req,
	}
	out.Reset()
	if err := resp.Write(out); err != nil {
		return err
	}
	_, err := c.Write(out.Bytes())
	return err
}

// prefersHTML reports whether the Accept header values rank text/html
// above application/json (browsers do; curl's */* does not).
func prefersHTML(accept []string) bool {
	var html, json float64 = -1, -1
	for _, v := range accept {
		for part := range strings.SplitSeq(v, ",") {
			typ, params, _ := strings.Cut(part, ";")
			typ = strings.ToLower(strings.TrimSpace(typ))
			q := 1.0
			for p := range strings.SplitSeq(params, ";") {
				k, val, ok := strings.Cut(strings.TrimSpace(p), "=")
				if ok && strings.EqualFold(k, "q") {
					if f, err := strconv.ParseFloat(val, 64); err == nil {
						q = f
					}
				}
			}
			switch typ {
			case "text/html":
				html = max(html, q)
			case "application/json":
				json = max(json, q)
			case "*/*", "application/*":
				if json < 0 {
					json = q
				}
			}
		}
	}
	return html > 0 && html > json
}

var page = template.Must(template.New("report").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>originlens: what the server saw</title>
<style>body{font-family:system-ui,sans-serif;margin:2em}td,th{padding:.2em .8em;text-align:left}th{color:#555}</style></head>
<body><h1>What the server saw of you</h1>
<table>{{range .}}<tr><th>{{.K}}</th><td>{{.V}}</td></tr>
{{end}}</table></body></html>
`))

// renderHTML renders the report as an escaped HTML table in line order.
func renderHTML(rep report.Report) []byte {
	type kv struct{ K, V string }
	rows := make([]kv, 0, len(rep))
	for _, k := range report.Order {
		if v := rep[k]; v != "" || report.Required(k) {
			rows = append(rows, kv{k, v})
		}
	}
	var b bytes.Buffer
	if err := page.Execute(&b, rows); err != nil {
		return []byte("<!doctype html><p>report unavailable</p>")
	}
	return b.Bytes()
}
