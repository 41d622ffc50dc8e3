package flagenv_test

import (
	"errors"
	"flag"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/originlens/originlens/internal/flagenv"
)

func TestApply(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		want    string
		wantDur time.Duration
		wantErr string
	}{
		{"Default", nil, nil, "def", time.Second, ""},
		{"EnvFallback", nil, map[string]string{"T_LISTEN_ADDR": "env", "T_TIMEOUT": "3s"}, "env", 3 * time.Second, ""},
		{"FlagWins", []string{"--listen-addr", "flag"}, map[string]string{"T_LISTEN_ADDR": "env"}, "flag", time.Second, ""},
		{"EmptyEnvIsAValue", nil, map[string]string{"T_LISTEN_ADDR": ""}, "", time.Second, ""},
		{"BadEnv", nil, map[string]string{"T_TIMEOUT": "soon"}, "def", time.Second, `T_TIMEOUT=soon (--timeout): want a duration`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			addr := fs.String("listen-addr", "def", "")
			dur := fs.Duration("timeout", time.Second, "")
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			err := flagenv.Apply(fs, "T_", func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok })
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Apply error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if *addr != tt.want || *dur != tt.wantDur {
				t.Errorf("listen-addr=%q timeout=%v, want %q %v", *addr, *dur, tt.want, tt.wantDur)
			}
		})
	}
}

func TestName(t *testing.T) {
	if got := flagenv.Name("APP_", "proxy-protocol"); got != "APP_PROXY_PROTOCOL" {
		t.Errorf("Name = %s, want APP_PROXY_PROTOCOL", got)
	}
}

// Ensure flags named command-line only, and help/h, never read the
// environment: APP_VERSION=2.3.1 (set by CI and container images) is not a
// bad --version, and APP_VERSION=true does not print the version.
func TestApplyCommandLineOnly(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		cmdOnly []string
		wantVer bool
		wantErr string
	}{
		{"VersionString", map[string]string{"T_VERSION": "2.3.1"}, []string{"version"}, false, ""},
		{"VersionTrue", map[string]string{"T_VERSION": "true"}, []string{"version"}, false, ""},
		{"Help", map[string]string{"T_HELP": "yes", "T_H": "1"}, []string{"version"}, false, ""},
		// Without the exclusion: the old behaviour, kept for other flags.
		{"NotExcludedString", map[string]string{"T_VERSION": "2.3.1"}, nil, false, "T_VERSION=2.3.1 (--version): want true or false, e.g. true (or 1, 0)"},
		{"NotExcludedTrue", map[string]string{"T_VERSION": "true"}, nil, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			ver := fs.Bool("version", false, "")
			help := fs.String("help", "", "")
			h := fs.Int("h", 0, "")
			if err := flagenv.Parse(fs, nil); err != nil {
				t.Fatal(err)
			}
			err := flagenv.Apply(fs, "T_", func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok }, tt.cmdOnly...)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("Apply error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if *ver != tt.wantVer || *help != "" || *h != 0 {
				t.Errorf("version=%v help=%q h=%d, want version=%v and no help from the environment", *ver, *help, *h, tt.wantVer)
			}
		})
	}
}

// Ensure Usage names the variable of every flag but the command-line-only.
func TestUsage(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.String("listen-addr", "", "where")
	fs.Bool("version", false, "print the version")
	flagenv.Usage(fs, "T_", "version")
	if u := fs.Lookup("listen-addr").Usage; u != "where [env T_LISTEN_ADDR]" {
		t.Errorf("listen-addr usage %q", u)
	}
	if u := fs.Lookup("version").Usage; u != "print the version" {
		t.Errorf("version usage %q; want no variable", u)
	}
}

// Ensure a bad value's error names the flag, the value and a good example,
// from the command line and from the environment; and that Parse keeps
// every other behaviour of fs.Parse.
func TestParseErrors(t *testing.T) {
	tests := []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--idle-timeout", "5"}, nil, "--idle-timeout 5: a duration needs a unit, e.g. 5s or 1m"},
		{[]string{"--idle-timeout=1.5"}, nil, "--idle-timeout 1.5: a duration needs a unit, e.g. 1.5s or 1m"},
		{[]string{"--idle-timeout", "soon"}, nil, "--idle-timeout soon: want a duration with a unit, e.g. 500ms, 30s, 1m or 1h30m"},
		{nil, map[string]string{"T_IDLE_TIMEOUT": "5"}, "T_IDLE_TIMEOUT=5 (--idle-timeout): a duration needs a unit, e.g. 5s or 1m"},
		{[]string{"--max-conns", "ten"}, nil, "--max-conns ten: want a whole number, e.g. 10"},
		{[]string{"--rate", "fast"}, nil, "--rate fast: want a number, e.g. 2.5"},
		{[]string{"--tls=maybe"}, nil, "--tls maybe: want true or false, e.g. true (or 1, 0)"},
		{[]string{"--size", "big"}, nil, "--size big: want a size like 5MiB"}, // a flag.Value's own error stays
		{[]string{"--nosuch"}, nil, "flag provided but not defined: -nosuch"},
		{[]string{"--idle-timeout"}, nil, "flag needs an argument: -idle-timeout"},
	}
	for _, tt := range tests {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		fs.Duration("idle-timeout", time.Minute, "")
		fs.Int("max-conns", 1, "")
		fs.Float64("rate", 0, "")
		fs.Bool("tls", false, "")
		fs.Var(sizeValue{}, "size", "")
		err := flagenv.Parse(fs, tt.args)
		if err == nil {
			err = flagenv.Apply(fs, "T_", func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok })
		}
		if err == nil || err.Error() != tt.want {
			t.Errorf("%q %v: error %v; want %q", tt.args, tt.env, err, tt.want)
		}
	}
	// The values are the flag package's again after Parse, and work.
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	d := fs.Duration("idle-timeout", time.Minute, "")
	b := fs.Bool("tls", false, "")
	if err := flagenv.Parse(fs, []string{"--tls", "--idle-timeout", "2s"}); err != nil || *d != 2*time.Second || !*b {
		t.Errorf("Parse = %v, idle-timeout %v tls %v", err, *d, *b)
	}
	if _, ok := fs.Lookup("idle-timeout").Value.(flag.Getter).Get().(time.Duration); !ok {
		t.Errorf("idle-timeout's value is %T after Parse", fs.Lookup("idle-timeout").Value)
	}
	if typ, _ := flag.UnquoteUsage(fs.Lookup("idle-timeout")); typ != "duration" {
		t.Errorf("UnquoteUsage type %q after Parse; want duration", typ)
	}
	// --help is flag.ErrHelp, and fs.Usage is left to the caller.
	called := false
	fs.Usage = func() { called = true }
	if err := flagenv.Parse(fs, []string{"--help"}); err != flag.ErrHelp || called {
		t.Errorf("--help: %v, usage called %v; want flag.ErrHelp and no call", err, called)
	}
}

type sizeValue struct{}

func (sizeValue) String() string   { return "" }
func (sizeValue) Set(string) error { return errors.New("want a size like 5MiB") }
