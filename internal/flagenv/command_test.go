package flagenv_test

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/originlens/originlens/internal/flagenv"
	"github.com/originlens/originlens/internal/flagenv/flagenvtest"
)

var testCommand = &flagenv.Command{
	Usage:    "t [flags] HOST:PORT\nt listen [flags]",
	Intro:    "Does a test.",
	Prefix:   "T_",
	CmdOnly:  []string{"version"},
	Short:    map[string]string{"n": "count"},
	EnvAlso:  map[string]string{"brokers": "BROKERS"},
	Examples: map[string]string{"brokers": "127.0.0.1:9092"},
	Groups: []flagenv.Group{
		{Title: "Network", Flags: []string{"listen*", "brokers"}},
		{Title: "Run", Flags: []string{"count", "idle-timeout"}},
		{Title: "Misc", Flags: []string{"version", "gone"}},
	},
}

func newTestFlags() *flag.FlagSet {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.String("listen", ":80", "where to `ADDR` listen")
	fs.String("listen-udp", "", "UDP too")
	fs.String("brokers", "", "Kafka")
	count := fs.Int("count", 1, "attempts")
	fs.IntVar(count, "n", 1, "alias of --count") // one variable, two names
	fs.Duration("idle-timeout", time.Minute, "idle")
	fs.Bool("version", false, "print the version")
	return fs
}

// Ensure --help groups the flags by topic in the table's order, shows the
// short alias beside its flag (not as a flag of its own), the variables
// beside every setting and none beside --version, and puts a flag of no
// topic under Other.
func TestCommandHelp(t *testing.T) {
	fs := newTestFlags()
	fs.Bool("stray", false, "in no group")
	var out bytes.Buffer
	testCommand.Help(&out, fs)
	help := out.String()
	if !strings.HasPrefix(help, "Usage: t [flags] HOST:PORT\n       t listen [flags]\n\nDoes a test.\n") {
		t.Errorf("help starts %q", help)
	}
	entries, groups := flagenvtest.Parse(help)
	if want := []string{"Network", "Run", "Misc", "Other"}; !slices.Equal(groups, want) {
		t.Errorf("groups %q; want %q\n%s", groups, want, help)
	}
	got := map[string]flagenvtest.Entry{}
	for _, e := range entries {
		got[e.Name] = e
	}
	for _, tt := range []struct {
		name, group, typ string
		short, env       []string
	}{
		{"listen", "Network", "ADDR", nil, []string{"T_LISTEN"}},
		{"listen-udp", "Network", "string", nil, []string{"T_LISTEN_UDP"}},
		{"brokers", "Network", "string", nil, []string{"T_BROKERS", "BROKERS"}},
		{"count", "Run", "int", []string{"n"}, []string{"T_COUNT"}},
		{"idle-timeout", "Run", "duration", nil, []string{"T_IDLE_TIMEOUT"}},
		{"version", "Misc", "", nil, nil},
		{"stray", "Other", "", nil, []string{"T_STRAY"}},
	} {
		e, ok := got[tt.name]
		if !ok || e.Group != tt.group || e.Type != tt.typ || !slices.Equal(e.Short, tt.short) || !slices.Equal(e.Env, tt.env) {
			t.Errorf("--%s: %+v (listed %v); want group %s type %q short %q env %q", tt.name, e, ok, tt.group, tt.typ, tt.short, tt.env)
		}
	}
	if _, ok := got["n"]; ok || len(got) != 7 {
		t.Errorf("flags %v; want 7, no -n of its own\n%s", got, help)
	}
	if !strings.Contains(help, "(default 1m0s)") || !strings.Contains(help, `(default ":80")`) || strings.Contains(help, `(default "")`) {
		t.Errorf("defaults wrong:\n%s", help)
	}
	ungrouped, unknown := testCommand.Ungrouped(fs)
	if !slices.Equal(ungrouped, []string{"stray"}) || !slices.Equal(unknown, []string{"gone"}) {
		t.Errorf("Ungrouped = %q, %q; want [stray] [gone]", ungrouped, unknown)
	}
}

// Ensure the Command's errors are one line naming the flag, the value and
// a good example, for a bad value, an unknown flag, a missing value and a
// value rejected after parsing; and that the environment fills what the
// command line left, a short alias counting as its flag.
func TestCommandErrorsAndEnv(t *testing.T) {
	tests := []struct {
		args    []string
		env     map[string]string
		want    string
		wantCnt int
	}{
		{[]string{"--count", "x"}, nil, "--count x: want a whole number, e.g. 10", 0},
		{[]string{"-n", "x"}, nil, "--count x: want a whole number, e.g. 10", 0},
		{[]string{"--nosuch"}, nil, "unknown flag --nosuch (see --help for the flags)", 0},
		// A value or name with a newline or space stays one line, quoted.
		{[]string{"--count", "1\n2"}, nil, `--count "1\n2": want a whole number, e.g. 10`, 0},
		{[]string{"--no\nsuch"}, nil, `unknown flag --"no\nsuch" (see --help for the flags)`, 0},
		{nil, map[string]string{"T_COUNT": ""}, `T_COUNT="" (--count): want a whole number, e.g. 10`, 0},
		{[]string{"-n"}, nil, "--count needs a value, e.g. --count 1", 0},
		{[]string{"--brokers"}, nil, "--brokers needs a value, e.g. --brokers 127.0.0.1:9092", 0},
		{[]string{"--idle-timeout"}, nil, "--idle-timeout needs a value, e.g. --idle-timeout 1m0s", 0},
		{nil, map[string]string{"T_COUNT": "many"}, "T_COUNT=many (--count): want a whole number, e.g. 10", 0},
		{nil, map[string]string{"T_COUNT": "3", "T_N": "9"}, "", 3},
		{[]string{"-n", "2"}, map[string]string{"T_COUNT": "3"}, "", 2},
		{nil, map[string]string{"T_VERSION": "2.3.1"}, "", 1},
		{nil, map[string]string{"BROKERS": "b:1"}, "", 1},
	}
	for _, tt := range tests {
		fs := newTestFlags()
		err := testCommand.Parse(fs, tt.args)
		if err == nil {
			err = testCommand.Apply(fs, func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok })
		}
		if tt.want != "" {
			if err == nil || err.Error() != tt.want {
				t.Errorf("%q %v: error %v; want %q", tt.args, tt.env, err, tt.want)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q %v: %v", tt.args, tt.env, err)
			continue
		}
		if n := fs.Lookup("count").Value.(flag.Getter).Get().(int); n != tt.wantCnt {
			t.Errorf("%q %v: count %d; want %d", tt.args, tt.env, n, tt.wantCnt)
		}
	}
	// The prefixed variable wins over the extra one.
	fs := newTestFlags()
	if err := testCommand.Apply(fs, func(k string) (string, bool) {
		v, ok := map[string]string{"T_BROKERS": "a:1", "BROKERS": "b:1"}[k]
		return v, ok
	}); err != nil || fs.Lookup("brokers").Value.String() != "a:1" {
		t.Errorf("brokers %q (%v); want a:1", fs.Lookup("brokers").Value.String(), err)
	}
	// Invalid: the current value, and the example or the default.
	fs = newTestFlags()
	fs.Set("count", "0")
	if err := testCommand.Invalid(fs, "count", errors.New("must be at least 1")); err == nil || err.Error() != "--count 0: must be at least 1 (e.g. --count 1)" {
		t.Errorf("Invalid = %v", err)
	}
	if err := testCommand.Invalid(fs, "brokers", errors.New("want host:port, e.g. b:9092")); err == nil || err.Error() != `--brokers "": want host:port, e.g. b:9092` {
		t.Errorf("Invalid = %v", err)
	}
	if testCommand.Invalid(fs, "count", nil) != nil {
		t.Error("Invalid(nil) != nil")
	}
}
