package main

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"unicode/utf8"
)

// TestHostileServerCannotEscape: a hostile server's bytes reach the
// operator's terminal only escaped. A refusal line whose code holds an
// ANSI escape, and reports whose via, peer and country hold escapes (a
// terminal title, a colour, a right-to-left override), printed in the
// diagnosis sentence and the --compare table, used to be written raw to
// stdout and stderr.
func TestHostileServerCannotEscape(t *testing.T) {
	refusal := startLineServer(t, func(c net.Conn) {
		fmt.Fprint(c, "error=\x1b[31mpwned peer=\"\x1b]0;owned\x07\"\n")
	})
	report := func(c net.Conn) {
		// A NAT-looking report (another client address) whose via, peer
		// and country carry escapes (quoted, as the line form allows).
		fmt.Fprintf(c, "client=192.0.2.9:1 via=%q peer=%q server=%s conn=x country=%q decision=serve\n",
			"\x1b[2Jproxy", "\x1b]0;title\x07", c.LocalAddr(), "\u202eSU")
	}
	nat := startLineServer(t, report)
	nat2 := startLineServer(t, report)
	for _, args := range [][]string{
		{refusal},
		{"--proxy", "v2", "--proxy-src", "203.0.113.10:4000", refusal},
		{nat},
		{"--proxy", "v2", "--proxy-src", "203.0.113.10:4000", nat},
		{"-n", "2", "-i", "1ms", "--compare", nat2, nat},
	} {
		_, out, errb := probeRun(t, args...)
		for name, s := range map[string]string{"stdout": out, "stderr": errb} {
			if i := strings.IndexAny(s, "\x1b\x07\u202e"); i >= 0 {
				t.Errorf("nc-probe %q: %s holds a raw control character from the server at %d: %q", args, name, i, s[max(0, i-60):min(len(s), i+40)])
			}
		}
	}
}

// FuzzEscaper: whatever is written, the output holds no character that
// steers a terminal, and text without one passes unchanged.
func FuzzEscaper(f *testing.F) {
	for _, s := range []string{"", "plain text\n\ttab", "\x1b[31mred\x07", "\r\n", "\u202eRTL\u2066", "\xff\xfe bad utf-8", "\u009b2J", "é ü 日本"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		var b strings.Builder
		n, err := escaper{&b}.Write(p)
		if err != nil || n != len(p) {
			t.Fatalf("Write = %d, %v; want %d, nil", n, err, len(p))
		}
		out := b.String()
		clean := true
		for i := 0; i < len(out); {
			r, n := utf8.DecodeRuneInString(out[i:])
			if steers(r, n) {
				t.Fatalf("output %q holds %q at %d", out, out[i:i+n], i)
			}
			i += n
		}
		for i := 0; i < len(p); {
			r, n := utf8.DecodeRune(p[i:])
			clean = clean && !steers(r, n)
			i += n
		}
		if clean && out != string(p) {
			t.Fatalf("clean input %q became %q", p, out)
		}
	})
}
