// Package readme_test runs the examples of the README: each example is a
// setup block and a transcript block, marked with HTML comments
//
//	<!-- readme-test: NAME setup [netns] -->   commands that start servers
//	<!-- readme-test: NAME transcript -->      "$ command" lines, each followed by its output
//
// The test builds the programs, runs the setup and every transcript command
// in one bash (in a new network namespace with "netns"), and compares the
// shape of each output with the README's: the same lines, keys, addresses,
// verdicts and exit statuses; times, ephemeral ports and ids may differ.
// `go test ./test/readme -update` rewrites the transcripts from a real run.
package readme_test

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the README's transcripts with the output of this run")

// block is a fenced code block: its content lines are lines[start:end] of
// the document.
type block struct {
	start, end int
	lines      []string
}

// example is one marked setup and its transcript.
type example struct {
	name       string
	netns      bool
	setup      *block
	transcript *block
}

// step is one "$ command" of a transcript and the output shown under it.
type step struct {
	cmd  string
	want []string
}

var markerRE = regexp.MustCompile(`^<!-- readme-test: (\S+) (setup|transcript)((?: \S+)*) -->$`)

// parseExamples finds the marked blocks of a Markdown document.
func parseExamples(lines []string) ([]*example, error) {
	byName := map[string]*example{}
	var order []*example
	for i := 0; i < len(lines); i++ {
		m := markerRE.FindStringSubmatch(strings.TrimSpace(lines[i]))
		if m == nil {
			continue
		}
		j := i + 1
		for j < len(lines) && strings.TrimSpace(lines[j]) == "" {
			j++
		}
		if j >= len(lines) || !strings.HasPrefix(lines[j], "```") {
			return nil, fmt.Errorf("line %d: marker %q is not followed by a fenced block", i+1, lines[i])
		}
		k := j + 1
		for k < len(lines) && !strings.HasPrefix(lines[k], "```") {
			k++
		}
		if k >= len(lines) {
			return nil, fmt.Errorf("line %d: fenced block never closes", j+1)
		}
		b := &block{start: j + 1, end: k, lines: lines[j+1 : k : k]} // full slice: appending copies
		ex := byName[m[1]]
		if ex == nil {
			ex = &example{name: m[1]}
			byName[m[1]] = ex
			order = append(order, ex)
		}
		switch m[2] {
		case "setup":
			ex.setup = b
			ex.netns = strings.Contains(m[3], "netns")
		case "transcript":
			ex.transcript = b
		}
		i = k
	}
	for _, ex := range order {
		if ex.setup == nil || ex.transcript == nil {
			return nil, fmt.Errorf("example %q needs both a setup and a transcript block", ex.name)
		}
	}
	return order, nil
}

// steps splits a transcript into commands and their shown output.
func (b *block) steps() ([]step, error) {
	var out []step
	for i, l := range b.lines {
		if cmd, ok := strings.CutPrefix(l, "$ "); ok {
			out = append(out, step{cmd: cmd})
			continue
		}
		if len(out) == 0 {
			return nil, fmt.Errorf("line %d: output before the first \"$ \" command", b.start+i+1)
		}
		out[len(out)-1].want = append(out[len(out)-1].want, l)
	}
	return out, nil
}

var (
	uuidRE  = `[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}`
	ipv4RE  = `(\d{1,3}(?:\.\d{1,3}){3})(?::(\d+))?`
	numRE   = `\d+(?:\.\d+)?(?:ms|s|%)?`
	tokenRE = regexp.MustCompile(uuidRE + `|` + ipv4RE + `|` + numRE)
	ipPort  = regexp.MustCompile(`^` + ipv4RE + `$`)
	onlyInt = regexp.MustCompile(`^\d+$`)
)

// idRE and hexRE find ids and random hex (see shape).
var (
	idRE  = regexp.MustCompile(uuidRE)
	hexRE = regexp.MustCompile(`\b[0-9a-f]{8,}\b`)
)

// shape reduces an output line to what must not change between runs: ids
// become <id>, ports not named in the example become <port>, other numbers
// (times, counts) become <n>, runs of spaces one space. A line that is only
// an integer (an exit status from `echo $?`) is kept as is.
//
// Random hex of 8 or more digits (a UDP flow's token, a probe's id) becomes
// <hex>, after the ids.
func shape(line string, keepPorts map[string]bool) string {
	line = strings.TrimSpace(line)
	if onlyInt.MatchString(line) {
		return line
	}
	// Random hex (a UDP flow's token, a probe's id) is not a number to
	// compare either.
	line = idRE.ReplaceAllString(line, "<id>")
	line = hexRE.ReplaceAllStringFunc(line, func(h string) string {
		if strings.Trim(h, "0123456789") == "" {
			return h // a number: left to the rules below
		}
		return "<hex>"
	})
	line = tokenRE.ReplaceAllStringFunc(line, func(tok string) string {
		if m := ipPort.FindStringSubmatch(tok); m != nil {
			switch {
			case m[2] == "":
				return m[1]
			case keepPorts[m[2]]:
				return tok
			default:
				return m[1] + ":<port>"
			}
		}
		if len(tok) == 36 && strings.Count(tok, "-") == 4 {
			return "<id>"
		}
		return "<n>"
	})
	return strings.Join(strings.Fields(line), " ")
}

// portsNamed returns every number of four or five digits in the example's
// commands: the ports it chose, which its output must show unchanged.
func portsNamed(texts ...string) map[string]bool {
	ports := map[string]bool{}
	for _, t := range texts {
		for _, p := range regexp.MustCompile(`\b\d{4,5}\b`).FindAllString(t, -1) {
			ports[p] = true
		}
	}
	return ports
}

func trimTrailingBlank(lines []string) []string {
	for len(lines) > 0 && strings.TrimSpace(lines[len(lines)-1]) == "" {
		lines = lines[:len(lines)-1]
	}
	return lines
}

// compareShape returns "" when got has the shape of want, else the first
// difference.
func compareShape(want, got []string, keep map[string]bool) string {
	want, got = trimTrailingBlank(want), trimTrailingBlank(got)
	for i := 0; i < len(want) || i < len(got); i++ {
		var w, g string
		if i < len(want) {
			w = want[i]
		}
		if i < len(got) {
			g = got[i]
		}
		if shape(w, keep) != shape(g, keep) {
			return fmt.Sprintf("line %d differs:\n  README: %q\n  run:    %q\n  README shape: %s\n  run shape:    %s", i+1, w, g, shape(w, keep), shape(g, keep))
		}
	}
	return ""
}

const markerPrefix = "@@readme-test step "

// listenPortRE finds the loopback ports an example's set-up listens on.
var listenPortRE = regexp.MustCompile(`(?:--listen 127\.0\.0\.1:|TCP-LISTEN:|bind 127\.0\.0\.1:)(\d+)`)

// script is the bash program that runs an example: the setup with its
// output (and that of the servers it starts) to setup.log, then each
// command after a marker line, then stops the servers.
func script(ex *example, steps []step) string {
	var b strings.Builder
	b.WriteString("set +e\n{\n")
	for _, l := range ex.setup.lines {
		b.WriteString(l + "\n")
	}
	b.WriteString("} >setup.log 2>&1\n")
	for i, s := range steps {
		fmt.Fprintf(&b, "echo '%s%d'\n%s\n", markerPrefix, i, s.cmd)
	}
	fmt.Fprintf(&b, "echo '%send'\nkill $(jobs -p) 2>/dev/null\nwait\n", markerPrefix)
	return b.String()
}

// splitSteps cuts the run's output at the marker lines.
func splitSteps(out string, n int) ([][]string, error) {
	res := make([][]string, n)
	cur := -1
	for _, l := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(l, markerPrefix); ok {
			if rest == "end" {
				return res, nil
			}
			i, err := strconv.Atoi(rest)
			if err != nil || i >= n {
				return nil, fmt.Errorf("bad marker %q", l)
			}
			cur = i
			continue
		}
		if cur >= 0 {
			res[cur] = append(res[cur], l)
		}
	}
	return nil, fmt.Errorf("the run stopped before its last command")
}

func readmePath() string { return filepath.Join("..", "..", "README.md") }

func readREADME(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile(readmePath())
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(string(data), "\n")
}

// buildPrograms builds the programs the examples call into dir/bin.
func buildPrograms(t *testing.T, dir string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(dir, "bin")+string(os.PathSeparator), "./cmd/app", "./cmd/nc-probe")
	cmd.Dir = filepath.Join("..", "..")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
}

// needTools skips unless every tool is in PATH, and unless nc is a netcat
// with -N (Debian's netcat-openbsd).
func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("skipping: %s not installed (Debian packages socat, haproxy, netcat-openbsd; .ci/run installs them)", tool)
		}
		if tool == "nc" {
			out, _ := exec.Command("nc", "-h").CombinedOutput()
			if !bytes.Contains(out, []byte("-N")) {
				t.Skip("skipping: this nc has no -N (install Debian's netcat-openbsd)")
			}
		}
	}
}

// TestReadmeExamples runs every marked example of the README and compares
// each command's output with the transcript's.
func TestReadmeExamples(t *testing.T) {
	lines := readREADME(t)
	examples, err := parseExamples(lines)
	if err != nil {
		t.Fatal(err)
	}
	if len(examples) == 0 {
		t.Fatal("no <!-- readme-test: ... --> examples in README.md")
	}
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("skipping: bash not installed")
	}
	dir := t.TempDir()
	buildPrograms(t, dir)
	type rewrite struct {
		start, end int
		lines      []string
	}
	var rewrites []rewrite
	for _, ex := range examples {
		t.Run(ex.name, func(t *testing.T) {
			needTools(t, "socat", "nc")
			if strings.Contains(strings.Join(ex.setup.lines, "\n"), "haproxy") {
				needTools(t, "haproxy")
			}
			if ex.netns {
				if os.Geteuid() != 0 {
					t.Skip("skipping: the example runs in a network namespace of its own and needs root")
				}
				needTools(t, "unshare", "ip")
			}
			steps, err := ex.transcript.steps()
			if err != nil {
				t.Fatal(err)
			}
			if !ex.netns {
				// A port taken by something else would answer in the
				// example's place: say so instead of comparing its output.
				for _, l := range ex.setup.lines {
					for _, m := range listenPortRE.FindAllStringSubmatch(l, -1) {
						ln, err := net.Listen("tcp", "127.0.0.1:"+m[1])
						if err != nil {
							t.Fatalf("the example listens on 127.0.0.1:%s, which is taken here: %v", m[1], err)
						}
						ln.Close()
					}
				}
			}
			got := runExample(t, dir, ex, steps)
			named := append([]string(nil), ex.setup.lines...)
			for _, s := range steps {
				named = append(named, s.cmd)
			}
			keep := portsNamed(named...)
			if *update {
				var nl []string
				for i, s := range steps {
					nl = append(nl, "$ "+s.cmd)
					nl = append(nl, trimTrailingBlank(got[i])...)
				}
				rewrites = append(rewrites, rewrite{ex.transcript.start, ex.transcript.end, nl})
				return
			}
			for i, s := range steps {
				if len(trimTrailingBlank(s.want)) == 0 {
					t.Errorf("$ %s: the README shows no output (run with -update)", s.cmd)
					continue
				}
				if d := compareShape(s.want, got[i], keep); d != "" {
					t.Errorf("$ %s\n%s\nfull output:\n%s", s.cmd, d, strings.Join(got[i], "\n"))
				}
			}
		})
	}
	if len(rewrites) > 0 {
		// Bottom up, so the earlier blocks' line numbers still hold.
		sort.Slice(rewrites, func(i, j int) bool { return rewrites[i].start > rewrites[j].start })
		for _, r := range rewrites {
			tail := append([]string(nil), lines[r.end:]...)
			lines = append(append(lines[:r.start:r.start], r.lines...), tail...)
		}
		if err := os.WriteFile(readmePath(), []byte(strings.Join(lines, "\n")), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Log("README.md transcripts rewritten from this run")
	}
}

// runExample runs an example in dir (which holds bin/) and returns each
// step's output lines. Every process it starts is in one process group,
// killed at the end.
func runExample(t *testing.T, dir string, ex *example, steps []step) [][]string {
	t.Helper()
	work := t.TempDir()
	if err := os.Symlink(filepath.Join(dir, "bin"), filepath.Join(work, "bin")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	src := script(ex, steps)
	var cmd *exec.Cmd
	if ex.netns {
		// The README's reader exports PATH after `sudo unshare -n bash`.
		cmd = exec.CommandContext(ctx, "unshare", "-n", "bash", "-c", `export PATH="$PWD/bin:$PATH"`+"\n"+src)
	} else {
		cmd = exec.CommandContext(ctx, "bash", "-c", src)
	}
	cmd.Dir = work
	cmd.Env = append(os.Environ(), "TMPDIR="+work)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
	err := cmd.Wait()
	setupLog, _ := os.ReadFile(filepath.Join(work, "setup.log"))
	if err != nil && ctx.Err() != nil {
		t.Fatalf("example %s did not finish in 2 minutes: %v\noutput:\n%s\nsetup.log:\n%s", ex.name, err, out.String(), setupLog)
	}
	res, serr := splitSteps(out.String(), len(steps))
	if serr != nil {
		t.Fatalf("example %s: %v (exit %v)\noutput:\n%s\nsetup.log:\n%s", ex.name, serr, err, out.String(), setupLog)
	}
	t.Logf("setup.log of %s:\n%s", ex.name, setupLog)
	return res
}

// TestReadmeOutputsHaveCommands checks that every block of the README that
// shows program output (a report line, a verdict) belongs to a marked
// example, so no output is shown without the commands that produce it.
func TestReadmeOutputsHaveCommands(t *testing.T) {
	lines := readREADME(t)
	examples, err := parseExamples(lines)
	if err != nil {
		t.Fatal(err)
	}
	marked := map[int]bool{}
	for _, ex := range examples {
		marked[ex.transcript.start] = true
	}
	outputRE := regexp.MustCompile(`client=\S+ via=|^(NOT )?PRESERVED:|^CANNOT TELL:`)
	inFence, start := false, 0
	for i, l := range lines {
		if strings.HasPrefix(l, "```") {
			if !inFence {
				start = i + 1
			}
			inFence = !inFence
			continue
		}
		if inFence && outputRE.MatchString(strings.TrimSpace(l)) && !marked[start] {
			t.Errorf("README.md:%d shows program output outside a <!-- readme-test: NAME transcript --> block: %q", i+1, l)
		}
	}
}

// TestShape checks the normalisation the comparison relies on: what may
// vary is masked, what must not is kept.
func TestShape(t *testing.T) {
	keep := portsNamed("nc-probe 127.0.0.1:18091")
	a := "  server saw  client=127.0.0.9:35585 via=direct peer=127.0.0.9:35585 server=127.0.0.1:18091 conn=01a21eeb-0359-7083-b1b0-5523c1dae1f3"
	b := "  server saw  client=127.0.0.9:50161 via=direct peer=127.0.0.9:50161 server=127.0.0.1:18091 conn=01a23b3d-257a-7b79-87d7-e1402f32b2c2"
	if shape(a, keep) != shape(b, keep) {
		t.Errorf("ports and ids should not matter:\n%s\n%s", shape(a, keep), shape(b, keep))
	}
	for _, differ := range [][2]string{
		{a, strings.Replace(a, "client=127.0.0.9", "client=127.0.0.1", 1)},             // the address seen
		{a, strings.Replace(a, "via=direct", "via=proxy-v2", 1)},                       // the key's value
		{a, strings.Replace(a, "server=127.0.0.1:18091", "server=127.0.0.1:18092", 1)}, // a chosen port
		{"1", "0"}, // an exit status
		{"PRESERVED: the server saw 127.0.0.1", "NOT PRESERVED: the server saw 127.0.0.1"},
	} {
		if shape(differ[0], keep) == shape(differ[1], keep) {
			t.Errorf("%q and %q must differ in shape", differ[0], differ[1])
		}
	}
	if got := shape("    connect  0.116  0.294   9.539  20", keep); got != "connect <n> <n> <n> <n>" {
		t.Errorf("timings: %q", got)
	}
	if d := compareShape([]string{"x"}, []string{"x", "extra"}, keep); d == "" {
		t.Error("an extra line of output passed the comparison")
	}
}
