// Package flagenvtest reads the --help that flagenv.Command.Help writes
// back into its entries, so that each program's tests can check its own
// help (every flag under a topic, its variable beside it) without parsing
// text of their own.
package flagenvtest

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/originlens/originlens/internal/flagenv"
)

// Entry is one flag of a --help.
type Entry struct {
	Group string   // the topic it is listed under
	Name  string   // without dashes
	Type  string   // "" for a bool
	Short []string // short aliases, without the dash
	Env   []string // the variables beside it
}

var (
	groupLine = regexp.MustCompile(`^([A-Z][^:]*):$`)
	flagLine  = regexp.MustCompile(`^  --([a-z0-9][a-z0-9-]*)( [A-Za-z:._\[\],-]+?)?((?:, -[a-z0-9]+)*)(?:\s+\[env ([A-Z0-9_ ]+(?: or [A-Z0-9_]+)*)\])?$`)
)

// Parse returns the flags of a help text in their order, and the topics
// in theirs.
func Parse(help string) (entries []Entry, groups []string) {
	group := ""
	sc := bufio.NewScanner(strings.NewReader(help))
	for sc.Scan() {
		line := sc.Text()
		if m := groupLine.FindStringSubmatch(line); m != nil {
			group = m[1]
			groups = append(groups, group)
			continue
		}
		m := flagLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		e := Entry{Group: group, Name: m[1], Type: strings.TrimSpace(m[2])}
		for s := range strings.SplitSeq(m[3], ", -") {
			if s != "" {
				e.Short = append(e.Short, s)
			}
		}
		if m[4] != "" {
			e.Env = strings.Split(m[4], " or ")
		}
		entries = append(entries, e)
	}
	return entries, groups
}

// Check fails t unless help shows the topics groups in this order (others
// may come between: topics that flags added since bring), lists every
// flag under a topic (none under "Other"), shows the variable
// cmd.Prefix+NAME (dashes as underscores) beside every flag but those of
// cmd.CmdOnly, which show none, and lists every flag that cmd's group
// table names exactly (no stale entry). It returns the entries by name.
func Check(t testing.TB, help string, cmd *flagenv.Command, groups []string) map[string]Entry {
	t.Helper()
	entries, got := Parse(help)
	if !isSubsequence(groups, got) || slices.Contains(got, "Other") {
		t.Errorf("--help topics %q; want %q in this order, and no Other", got, groups)
	}
	if len(entries) == 0 {
		t.Fatalf("no flags in --help:\n%s", help)
	}
	byName := map[string]Entry{}
	for _, e := range entries {
		byName[e.Name] = e
		if e.Group == "" || e.Group == "Other" {
			t.Errorf("--%s is under %q, no topic: add it to the group table", e.Name, e.Group)
		}
		var want string
		if cmd.Prefix != "" && !slices.Contains(cmd.CmdOnly, e.Name) && e.Name != "help" {
			want = cmd.Prefix + strings.ToUpper(strings.ReplaceAll(e.Name, "-", "_"))
		}
		if first := ""; len(e.Env) > 0 && e.Env[0] != want || len(e.Env) == 0 && want != first {
			t.Errorf("--%s shows variables %q; want %q first", e.Name, e.Env, want)
		}
	}
	for _, g := range cmd.Groups {
		for _, name := range g.Flags {
			if _, ok := byName[name]; !ok && !strings.HasSuffix(name, "*") {
				t.Errorf("group %q names --%s, which --help does not list", g.Title, name)
			}
		}
	}
	return byName
}

// isSubsequence reports whether want appears in got in order.
func isSubsequence(want, got []string) bool {
	i := 0
	for _, g := range got {
		if i < len(want) && g == want[i] {
			i++
		}
	}
	return i == len(want)
}

// CheckError fails t unless err is one line naming --flag and value and
// showing a good value ("e.g.").
func CheckError(t testing.TB, err error, flag, value string) {
	t.Helper()
	if err == nil {
		t.Errorf("--%s %s: no error", flag, value)
		return
	}
	msg := err.Error()
	if strings.Contains(msg, "\n") || !strings.Contains(msg, "--"+flag) || !strings.Contains(msg, value) || !strings.Contains(msg, "e.g.") {
		t.Errorf("--%s %s: error %q; want one line naming --%s, %q and an example (e.g.)", flag, value, msg, flag, value)
	}
}

// Build builds the main package in the current directory (a test's) into
// t's temporary directory and returns the binary's path. It skips with
// -short.
func Build(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary: skipped with -short")
	}
	bin := filepath.Join(t.TempDir(), "cmd")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// CheckBinary runs bin --help and fails t unless it exits 0 with nothing on
// stderr and a help that passes Check; then runs bin with bad (and env
// added to the process's environment) and fails t unless it exits 2 with
// exactly wantErr (one line) on stderr and nothing on stdout.
func CheckBinary(t testing.TB, bin string, cmd *flagenv.Command, groups []string, env, bad []string, wantErr string) {
	t.Helper()
	stdout, stderr, code := run(t, bin, nil, "--help")
	if code != 0 || stderr != "" {
		t.Fatalf("--help: exit %d, stderr %q", code, stderr)
	}
	Check(t, stdout, cmd, groups)
	stdout, stderr, code = run(t, bin, env, bad...)
	if code != 2 || stderr != wantErr || stdout != "" {
		t.Errorf("%q %q: exit %d stderr %q stdout %q; want 2, %q", env, bad, code, stderr, stdout, wantErr)
	}
}

func run(t testing.TB, bin string, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if cmd.ProcessState == nil {
		t.Fatalf("%s: %v", bin, err)
	}
	return out.String(), errOut.String(), cmd.ProcessState.ExitCode()
}

// Want is what one flag's entry must be: its topic, its type ("" for a
// bool), its short aliases and its variables, comma-separated ("" none).
type Want struct{ Flag, Group, Type, Short, Env string }

// CheckEntries fails t for every Want that got (from Check) does not
// match.
func CheckEntries(t testing.TB, got map[string]Entry, wants ...Want) {
	t.Helper()
	for _, w := range wants {
		e, ok := got[w.Flag]
		if !ok || e.Group != w.Group || e.Type != w.Type || strings.Join(e.Short, ",") != w.Short || strings.Join(e.Env, ",") != w.Env {
			t.Errorf("--%s: %+v (listed %v); want %+v", w.Flag, e, ok, w)
		}
	}
}

// OfType returns the names of the flags of help whose value type is typ
// (e.g. "duration"), in their order; it fails t when fewer than min are.
func OfType(t testing.TB, help, typ string, min int) []string {
	t.Helper()
	entries, _ := Parse(help)
	var names []string
	for _, e := range entries {
		if e.Type == typ {
			names = append(names, e.Name)
		}
	}
	if len(names) < min {
		t.Fatalf("only %d %s flags in --help (want at least %d):\n%s", len(names), typ, min, help)
	}
	return names
}
