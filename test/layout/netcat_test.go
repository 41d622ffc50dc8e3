package layout_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// docFiles are the Markdown files whose commands a reader copies: the
// README, every README under deploy/, and docs/*.md.
func docFiles(t *testing.T, root string) []string {
	t.Helper()
	files := []string{filepath.Join(root, "README.md")}
	err := filepath.WalkDir(filepath.Join(root, "deploy"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && d.Name() == "README.md" {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	docs, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	return append(files, docs...)
}

// codeOf returns the parts of a Markdown document a reader would run: the
// lines of fenced code blocks and the inline code spans of the prose, each
// with its line number.
func codeOf(md string) []codeLine {
	var out []codeLine
	inFence := false
	spanRE := regexp.MustCompile("`([^`]+)`")
	for i, line := range strings.Split(md, "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "```") || strings.HasPrefix(trimmed, "~~~") {
			inFence = !inFence
			continue
		}
		if inFence {
			out = append(out, codeLine{i + 1, line})
			continue
		}
		for _, m := range spanRE.FindAllStringSubmatch(line, -1) {
			out = append(out, codeLine{i + 1, m[1]})
		}
	}
	return out
}

type codeLine struct {
	line int
	text string
}

// ncCallRE finds a netcat invocation: the command word nc (or netcat,
// nc.openbsd, nc.traditional) at the start of a command, followed by its
// arguments up to the end of that command.
var ncCallRE = regexp.MustCompile(`(?:^|[|;&(]|\s)(nc|netcat|nc\.openbsd|nc\.traditional)\s+([^|;&)\n]*)`)

// netcatProblem returns why a netcat command would not return at once as
// written, or "" when it does: it must close or time out by itself after its
// input ends (-N shuts the socket down at EOF, -q N quits N seconds after
// EOF, -w N times out an idle connection), and a UDP one (-u) needs -w since
// UDP has no end.
func netcatProblem(args string) string {
	flags := map[rune]bool{}
	for _, f := range strings.Fields(args) {
		if !strings.HasPrefix(f, "-") || strings.HasPrefix(f, "--") {
			continue
		}
		for _, r := range f[1:] {
			if r >= '0' && r <= '9' {
				break // -w2, -q0: the value follows the letter
			}
			flags[r] = true
		}
	}
	switch {
	case flags['u'] && !flags['w']:
		return "UDP netcat needs -w N to return (it never sees an end of the connection)"
	case flags['u']:
		return ""
	case flags['N'] || flags['q'] || flags['w']:
		return ""
	}
	return "waits for the server to close (60 s or more with Debian's netcat-openbsd): add -N (close at end of input), or -q 1 / -w N"
}

// netcatProblems lists each netcat command in md that would hang.
func netcatProblems(name, md string) (problems []string, seen int) {
	for _, cl := range codeOf(md) {
		for _, m := range ncCallRE.FindAllStringSubmatch(cl.text, -1) {
			seen++
			if why := netcatProblem(m[2]); why != "" {
				problems = append(problems, name+":"+strconv.Itoa(cl.line)+": `"+strings.TrimSpace(m[0])+"`: "+why)
			}
		}
	}
	return problems, seen
}

// TestDocumentedNetcatReturns is a doc lint: every netcat command in the
// README, the deploy guides and docs/ must end by itself as written.
func TestDocumentedNetcatReturns(t *testing.T) {
	root := filepath.Join("..", "..")
	total := 0
	for _, f := range docFiles(t, root) {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(root, f)
		problems, seen := netcatProblems(rel, string(data))
		total += seen
		for _, p := range problems {
			t.Error(p)
		}
	}
	t.Logf("%d netcat commands checked", total)
}

// TestNetcatLint feeds the lint the forms it must accept and reject.
func TestNetcatLint(t *testing.T) {
	md := strings.Join([]string{
		"Prose with `echo hello | nc <accelerator IP> 8080` inline.", // 1 bad
		"```sh",
		"echo hello | nc -N 127.0.0.1 8080",          // ok
		"printf 'x\\n' | nc -q1 host 8080",           // ok
		"nc -w 3 -z host 80 && echo open",            // ok
		"echo ping | nc -u host 53",                  // 6 bad: UDP without -w
		"echo ping | nc -u -w1 host 53",              // ok
		"ip netns exec client nc 203.0.113.200 8080", // 8 bad
		"nc-probe 127.0.0.1:8080; sync host",         // not netcat
		"echo hi | netcat host 80",                   // 10 bad
		"```",
		"Run nc-probe, or nc with -N.", // prose outside code: not checked
	}, "\n")
	problems, seen := netcatProblems("x.md", md)
	if seen != 8 {
		t.Errorf("found %d netcat commands, want 8", seen)
	}
	got := strings.Join(problems, "\n")
	for _, want := range []string{"x.md:1:", "x.md:6: `nc -u host 53`: UDP", "x.md:8:", "x.md:10:"} {
		if !strings.Contains(got, want) {
			t.Errorf("lint missed %q; it reported:\n%s", want, got)
		}
	}
	if len(problems) != 4 {
		t.Errorf("lint reported %d problems, want 4:\n%s", len(problems), got)
	}
}
