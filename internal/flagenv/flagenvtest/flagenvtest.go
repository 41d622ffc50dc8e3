// Package flagenvtest reads the --help that flagenv.Command.Help writes
// back into its entries, so that each program's tests can check its own
// help (every flag under a topic, its variable beside it) without parsing
// text of their own.
package flagenvtest

import (
	"bufio"
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

// Check fails t unless help shows exactly the topics groups, lists every
// flag under one of them (none under "Other"), shows the variable
// cmd.Prefix+NAME (dashes as underscores) beside every flag but those of
// cmd.CmdOnly, which show none, and lists every flag that cmd's group
// table names exactly (no stale entry). It returns the entries by name.
func Check(t testing.TB, help string, cmd *flagenv.Command, groups []string) map[string]Entry {
	t.Helper()
	entries, got := Parse(help)
	if !slices.Equal(got, groups) {
		t.Errorf("--help topics %q; want %q", got, groups)
	}
	if len(entries) == 0 {
		t.Fatalf("no flags in --help:\n%s", help)
	}
	byName := map[string]Entry{}
	for _, e := range entries {
		byName[e.Name] = e
		if !slices.Contains(groups, e.Group) {
			t.Errorf("--%s is under %q, no topic of %q: add it to the group table", e.Name, e.Group, groups)
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
