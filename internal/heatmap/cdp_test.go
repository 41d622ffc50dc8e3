package heatmap_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// cdpPage drives one page of headless Chromium over the DevTools protocol
// on a pipe (--remote-debugging-pipe: commands on the child's fd 3,
// answers and events on fd 4, each message ended by a NUL byte), so that
// the test can click, resize and read the page as a person would use it.
// It is not safe for concurrent use.
type cdpPage struct {
	t       *testing.T
	in      *os.File // to Chromium
	out     *bufio.Reader
	outFile *os.File
	id      int
	session string
	// requests are the URLs the page asked for (Network.requestWillBeSent).
	requests []string
}

// openPage starts Chromium with a fresh profile, opens url in a window of
// w×h CSS pixels and waits until the map has been drawn with data. The
// browser is stopped at the end of the test.
func openPage(t *testing.T, bin, url string, w, h int) *cdpPage {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	cmdIn, in, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	outFile, cmdOut, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, bin,
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
		"--disable-component-update", "--no-first-run", "--disable-quic", "--disable-sync", "--disable-extensions",
		"--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio",
		"--user-data-dir="+t.TempDir(), "--remote-debugging-pipe", fmt.Sprintf("--window-size=%d,%d", w, h), "about:blank")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.ExtraFiles = []*os.File{cmdIn, cmdOut} // fd 3, fd 4
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	cmdIn.Close()
	cmdOut.Close()
	p := &cdpPage{t: t, in: in, out: bufio.NewReader(outFile), outFile: outFile}
	t.Cleanup(func() {
		in.Close() // Chromium exits when its pipe closes
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		outFile.Close()
		if t.Failed() {
			var keep []string
			for _, l := range strings.Split(stderr.String(), "\n") {
				if !strings.Contains(l, "dbus") { // no system bus here: noise
					keep = append(keep, l)
				}
			}
			t.Logf("chromium stderr:\n%s", strings.Join(keep, "\n"))
		}
	})
	_ = outFile.SetReadDeadline(time.Now().Add(60 * time.Second))

	var target struct{ TargetID string }
	p.call("Target.createTarget", map[string]any{"url": "about:blank"}, &target)
	var att struct{ SessionID string }
	p.call("Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true}, &att)
	p.session = att.SessionID
	p.call("Emulation.setDeviceMetricsOverride", map[string]any{"width": w, "height": h, "deviceScaleFactor": 1, "mobile": false}, nil)
	p.call("Network.enable", map[string]any{}, nil)
	p.call("Page.navigate", map[string]any{"url": url}, nil)
	p.waitFor("the map drawn with data", `Number(document.getElementById("map").dataset.draws) >= 1`)
	return p
}

// call sends one command and decodes its result into res (nil: ignore).
func (p *cdpPage) call(method string, params any, res any) {
	p.t.Helper()
	p.id++
	msg := map[string]any{"id": p.id, "method": method, "params": params}
	if p.session != "" {
		msg["sessionId"] = p.session
	}
	b, err := json.Marshal(msg)
	if err != nil {
		p.t.Fatal(err)
	}
	if _, err := p.in.Write(append(b, 0)); err != nil {
		p.t.Fatalf("%s: writing to chromium: %v", method, err)
	}
	for {
		line, err := p.out.ReadBytes(0)
		if err != nil {
			p.t.Fatalf("%s: reading from chromium: %v", method, err)
		}
		var r struct {
			ID     int             `json:"id"`
			Method string          `json:"method"`
			Params json.RawMessage `json:"params"`
			Result json.RawMessage `json:"result"`
			Error  *struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal(bytes.TrimSuffix(line, []byte{0}), &r); err != nil {
			p.t.Fatalf("%s: bad message from chromium: %v", method, err)
		}
		if r.Method == "Network.requestWillBeSent" {
			var ev struct {
				Request struct {
					URL string `json:"url"`
				} `json:"request"`
			}
			if json.Unmarshal(r.Params, &ev) == nil {
				p.requests = append(p.requests, ev.Request.URL)
			}
		}
		if r.ID != p.id {
			continue // an event, or an answer to nothing we wait for
		}
		if r.Error != nil {
			p.t.Fatalf("%s: %s", method, r.Error.Message)
		}
		if res != nil {
			if err := json.Unmarshal(r.Result, res); err != nil {
				p.t.Fatalf("%s: decoding %s: %v", method, r.Result, err)
			}
		}
		return
	}
}

// eval evaluates a JavaScript expression in the page and decodes its value
// into v.
func (p *cdpPage) eval(expr string, v any) {
	p.t.Helper()
	var r struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text string `json:"text"`
		} `json:"exceptionDetails"`
	}
	p.call("Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true}, &r)
	if r.ExceptionDetails != nil {
		p.t.Fatalf("evaluating %s: %s", expr, r.ExceptionDetails.Text)
	}
	if err := json.Unmarshal(r.Result.Value, v); err != nil {
		p.t.Fatalf("evaluating %s: value %s: %v", expr, r.Result.Value, err)
	}
}

// waitFor polls a JavaScript condition until it holds (at most 30 s); a
// condition that throws (the page not loaded yet) does not hold.
func (p *cdpPage) waitFor(what, cond string) {
	p.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var ok bool
		p.eval("(() => { try { return !!("+cond+"); } catch (e) { return false; } })()", &ok)
		if ok {
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("waiting for %s (%s): not after 30 s", what, cond)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// click presses and releases the left mouse button in the middle of the
// element selector names, as a person's click.
func (p *cdpPage) click(selector string) {
	p.t.Helper()
	var at struct{ X, Y float64 }
	p.eval(fmt.Sprintf(`(() => { const e = document.querySelector(%q); e.scrollIntoView({block: "center"});
		const r = e.getBoundingClientRect(); return {x: r.left + r.width / 2, y: r.top + r.height / 2}; })()`, selector), &at)
	for _, typ := range []string{"mousePressed", "mouseReleased"} {
		p.call("Input.dispatchMouseEvent", map[string]any{"type": typ, "x": at.X, "y": at.Y, "button": "left", "clickCount": 1}, nil)
	}
}
