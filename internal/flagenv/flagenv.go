// Package flagenv gives command-line flags an environment-variable fallback,
// the way CloudFormation user data, systemd EnvironmentFile and ECS task
// definitions configure a program: a flag given on the command line wins,
// else PREFIX_FLAG_NAME from the environment, else the default. Flags that
// are requests rather than settings (--help, --version) are named to Apply
// and Usage as command-line only: container and CI environments set
// variables such as APP_VERSION for their own purposes.
//
// It also makes a bad value's error one line that names the flag, the value
// and an example of a good one (Parse), where the flag package says only
// "parse error"; and Command gives the four programs one command line:
// --help grouped by topic with the variable beside each flag, short
// aliases, and the same one-line errors for unknown flags, missing values
// and values rejected after parsing.
package flagenv

import (
	"errors"
	"flag"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// Name returns the environment variable for a flag: prefix + the flag's
// name in upper case with dashes as underscores ("APP_", "proxy-protocol"
// -> "APP_PROXY_PROTOCOL").
func Name(prefix, flagName string) string {
	return prefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// builtinCLIOnly are the flag package's own help flags: never from the
// environment, whatever the caller lists.
var builtinCLIOnly = []string{"help", "h"}

// cliOnly reports whether a flag reads the command line only.
func cliOnly(name string, listed []string) bool {
	return slices.Contains(builtinCLIOnly, name) || slices.Contains(listed, name)
}

// Apply sets every flag of fs that the command line did not set from its
// environment variable, when lookup finds one, except the flags named in
// cmdOnly (and help/h), which read the command line only. Call it after
// Parse. The first bad value stops it; its error is a *ValueError naming
// the variable, the flag, the value and a good example.
func Apply(fs *flag.FlagSet, prefix string, lookup func(string) (string, bool), cmdOnly ...string) error {
	return (&Command{Prefix: prefix, CmdOnly: cmdOnly}).Apply(fs, lookup)
}

// Usage appends " [env PREFIX_NAME]" to the usage of every flag of fs but
// those in cmdOnly (and help/h), for help output that shows the variables.
func Usage(fs *flag.FlagSet, prefix string, cmdOnly ...string) {
	fs.VisitAll(func(f *flag.Flag) {
		if !cliOnly(f.Name, cmdOnly) {
			f.Usage += " [env " + Name(prefix, f.Name) + "]"
		}
	})
}

// ValueError is a flag value that does not parse.
type ValueError struct {
	Env   string // the environment variable it came from; empty: the command line
	Flag  string // the flag's name, without dashes
	Value string
	Err   error // what is wrong, with an example of a good value
}

func (e *ValueError) Error() string {
	if e.Env != "" {
		return fmt.Sprintf("%s=%s (--%s): %v", e.Env, Quote(e.Value), e.Flag, e.Err)
	}
	return fmt.Sprintf("--%s %s: %v", e.Flag, Quote(e.Value), e.Err)
}

// Quote returns s as it is when it is a plain word, else quoted (Go
// syntax): empty, or with spaces, quotes or control characters, so that an
// error stays one readable line whatever the value holds.
func Quote(s string) string {
	if s == "" || strings.ContainsFunc(s, func(r rune) bool { return !unicode.IsGraphic(r) || unicode.IsSpace(r) || r == '"' || r == '\\' }) {
		return strconv.Quote(s)
	}
	return s
}

func (e *ValueError) Unwrap() error { return e.Err }

// Parse parses args into fs like fs.Parse, but the error for a value that
// does not parse is a *ValueError ("--idle-timeout 5: a duration needs a
// unit, e.g. 5s or 1m") instead of the flag package's "invalid value "5"
// for flag -idle-timeout: parse error". Other errors (unknown flag,
// flag.ErrHelp) are fs.Parse's. It does not call fs.Usage: on
// flag.ErrHelp the caller prints its help. fs should use
// flag.ContinueOnError and io.Discard as its output (fs.Parse writes its
// own error text there).
func Parse(fs *flag.FlagSet, args []string) error {
	var bad *ValueError
	fs.VisitAll(func(f *flag.Flag) {
		f.Value = &checked{Value: f.Value, name: f.Name, bad: &bad}
	})
	usage := fs.Usage
	fs.Usage = func() {}
	err := fs.Parse(args)
	fs.Usage = usage
	fs.VisitAll(func(f *flag.Flag) {
		if c, ok := f.Value.(*checked); ok {
			f.Value = c.Value
		}
	})
	if err != nil && bad != nil {
		return bad
	}
	return err
}

// checked wraps a flag's Value during Parse to keep a readable error of
// its Set.
type checked struct {
	flag.Value
	name string
	bad  **ValueError
}

func (c *checked) Set(s string) error {
	err := c.Value.Set(s)
	if err != nil {
		*c.bad = &ValueError{Flag: c.name, Value: s, Err: explain(c.Value, s, err)}
	}
	return err
}

// IsBoolFlag passes the wrapped value's (the flag package asks it to allow
// "--flag" without a value).
func (c *checked) IsBoolFlag() bool {
	b, ok := c.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// Get passes the wrapped value's, for callers that use flag.Getter.
func (c *checked) Get() any {
	if g, ok := c.Value.(flag.Getter); ok {
		return g.Get()
	}
	return nil
}

// explain turns the flag package's "parse error" for a value of a standard
// type into what a good value looks like; other errors (a flag.Value's own,
// which says what it wants) stay as they are.
func explain(v flag.Value, s string, err error) error {
	g, ok := v.(flag.Getter)
	if !ok {
		return err
	}
	switch g.Get().(type) {
	case time.Duration:
		if _, nerr := time.ParseDuration(s + "s"); nerr == nil {
			return fmt.Errorf("a duration needs a unit, e.g. %ss or 1m", s)
		}
		return errors.New("want a duration with a unit, e.g. 500ms, 30s, 1m or 1h30m")
	case bool:
		return errors.New("want true or false, e.g. true (or 1, 0)")
	case int, int64:
		return errors.New("want a whole number, e.g. 10")
	case uint, uint64:
		return errors.New("want a whole number, not negative, e.g. 10")
	case float64:
		return errors.New("want a number, e.g. 2.5")
	}
	return err
}
