package flagenvtest

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/originlens/originlens/internal/flagenv"
)

// recorder is a testing.TB that keeps the failures instead of failing.
type recorder struct {
	testing.TB
	msgs []string
}

func (r *recorder) Helper() {}
func (r *recorder) Errorf(format string, a ...any) {
	r.msgs = append(r.msgs, fmt.Sprintf(format, a...))
}
func (r *recorder) Fatalf(format string, a ...any) { r.Errorf(format, a...) }

var cmd = &flagenv.Command{
	Prefix:  "T_",
	CmdOnly: []string{"version"},
	Groups:  []flagenv.Group{{Title: "Net", Flags: []string{"listen", "gone"}}, {Title: "Misc", Flags: []string{"version"}}},
}

// Ensure Check passes a good help and names each fault of a bad one: a
// flag under Other, a missing or wrong variable, a variable beside a
// command-line-only flag, a missing topic, a stale name in the table.
func TestCheck(t *testing.T) {
	good := "Usage: t\n\nNet:\n  --listen string   [env T_LISTEN]\n      where\n  --gone int   [env T_GONE]\n      x\n\nMisc:\n  --version\n      v\n"
	r := &recorder{TB: t}
	Check(r, good, cmd, []string{"Net", "Misc"})
	if len(r.msgs) != 0 {
		t.Errorf("good help: %q", r.msgs)
	}
	bad := "Usage: t\n\nNet:\n  --listen string\n      where\n\nMisc:\n  --version   [env T_VERSION]\n      v\n\nOther:\n  --stray   [env X_STRAY]\n      s\n"
	r = &recorder{TB: t}
	Check(r, bad, cmd, []string{"Net", "Misc", "Spool"})
	all := strings.Join(r.msgs, "\n")
	for _, want := range []string{
		`--help topics`,
		`--stray is under "Other"`,
		`--listen shows variables []; want "T_LISTEN"`,
		`--version shows variables ["T_VERSION"]; want ""`,
		`--stray shows variables ["X_STRAY"]`,
		`names --gone, which --help does not list`,
	} {
		if !strings.Contains(all, want) {
			t.Errorf("Check of a bad help did not report %q; reported:\n%s", want, all)
		}
	}
}

// Ensure CheckError wants one line with the flag, the value and "e.g.".
func TestCheckError(t *testing.T) {
	for _, tt := range []struct {
		err  error
		fail bool
	}{
		{errors.New("--count x: want a whole number, e.g. 10"), false},
		{errors.New("--count x: want a whole number"), true},
		{errors.New("--count: want a whole number, e.g. 10"), true},
		{errors.New("--count x:\nwant a whole number, e.g. 10"), true},
		{nil, true},
	} {
		r := &recorder{TB: t}
		CheckError(r, tt.err, "count", "x")
		if failed := len(r.msgs) > 0; failed != tt.fail {
			t.Errorf("CheckError(%v) failed %v; want %v", tt.err, failed, tt.fail)
		}
	}
}

// Ensure OfType lists exactly the flags of that type, in order, and fails
// when too few are found (a help whose format changed must not make the
// callers' loops run over nothing).
func TestOfType(t *testing.T) {
	help := "Usage: t\n\nNet:\n  --listen string   [env T_LISTEN]\n  --idle duration   [env T_IDLE]\n  --gone int\n  --wait duration\n  --verbose\n"
	r := &recorder{TB: t}
	if got := OfType(r, help, "duration", 2); strings.Join(got, ",") != "idle,wait" || len(r.msgs) != 0 {
		t.Errorf("OfType(duration) = %q, failures %q; want idle,wait", got, r.msgs)
	}
	r = &recorder{TB: t}
	OfType(r, help, "duration", 3)
	if len(r.msgs) != 1 || !strings.Contains(r.msgs[0], "only 2 duration flags") {
		t.Errorf("OfType with too few: failures %q", r.msgs)
	}
}
