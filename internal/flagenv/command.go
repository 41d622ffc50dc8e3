package flagenv

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
)

// Command describes one program's (or subcommand's) command line: its
// environment prefix, the flags that read the command line only, short
// aliases, and the topics --help groups the flags under. The four programs
// (app, ingest, nc-probe, demo) each declare one, so their help and their
// errors look alike. A Command is read-only after it is declared: safe for
// concurrent use.
type Command struct {
	Usage  string // the usage lines, e.g. "app [flags]"
	Intro  string // what the program does, before the flags
	Prefix string // environment prefix, e.g. "APP_"; empty: no variables

	// CmdOnly are the flags that read the command line only: requests,
	// not settings (version; help and h always are).
	CmdOnly []string
	// Short maps a short alias to its flag ("n" -> "count"): --help shows
	// it beside the flag; it has no variable of its own, and given, it
	// counts as its flag given.
	Short map[string]string
	// EnvAlso maps a flag to one more variable read when PREFIX_NAME is
	// not set (the demo's documented GEOIP_DB, KAFKA_BROKERS...).
	EnvAlso map[string]string
	// Examples are good values for flags whose default is not one (empty
	// defaults), used in errors: "e.g. --trusted-proxies 10.0.0.0/8".
	Examples map[string]string
	// Groups are the topics of --help, in order. Every flag must be in
	// one (Ungrouped says which are not; --help lists them under
	// "Other").
	Groups []Group
}

// Group is one topic of --help. Flags are flag names; a name ending in
// "*" matches every flag it is a prefix of ("kafka-*"), so new flags of a
// family land in its group. The first group that matches a flag wins.
type Group struct {
	Title string
	Flags []string
}

// Env returns the variables a flag reads, first the one that wins; none
// for command-line-only flags and short aliases.
func (c *Command) Env(name string) []string {
	if c.Prefix == "" || cliOnly(name, c.CmdOnly) || c.Short[name] != "" {
		return nil
	}
	vars := []string{Name(c.Prefix, name)}
	if v := c.EnvAlso[name]; v != "" {
		vars = append(vars, v)
	}
	return vars
}

// Parse parses args into fs (see the package's Parse) with the Command's
// errors: an unknown flag or one without its value is one line with an
// example, like a bad value.
func (c *Command) Parse(fs *flag.FlagSet, args []string) error {
	err := Parse(fs, args)
	if ve := (*ValueError)(nil); errors.As(err, &ve) {
		if long := c.Short[ve.Flag]; long != "" {
			ve.Flag = long // -n x: "--count x: ..."
		}
		ve.Err = c.withExample(fs, ve.Flag, ve.Err)
		return ve
	}
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return err
	}
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: "); ok {
		name = strings.TrimLeft(name, "-")
		return fmt.Errorf("unknown flag --%s (see --help for the flags)", Quote(name))
	}
	if name, ok := strings.CutPrefix(msg, "flag needs an argument: "); ok {
		name = strings.TrimLeft(name, "-")
		if c.Short[name] != "" {
			name = c.Short[name]
		}
		if ex := c.example(fs, name); ex != "" {
			return fmt.Errorf("--%s needs a value, e.g. --%s %s", name, name, ex)
		}
		return fmt.Errorf("--%s needs a value", name)
	}
	return err
}

// Apply sets every flag of fs that the command line did not set (nor its
// short alias) from its variables (see Env), the first that lookup finds.
// Call it after Parse. The first bad value stops it: a *ValueError naming
// the variable, the flag, the value and a good example.
func (c *Command) Apply(fs *flag.FlagSet, lookup func(string) (string, bool)) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) {
		set[f.Name] = true
		if long := c.Short[f.Name]; long != "" {
			set[long] = true
		}
	})
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || err != nil {
			return
		}
		for _, env := range c.Env(f.Name) {
			v, ok := lookup(env)
			if !ok {
				continue
			}
			if e := f.Value.Set(v); e != nil {
				err = &ValueError{Env: env, Flag: f.Name, Value: v, Err: c.withExample(fs, f.Name, explain(f.Value, v, e))}
			}
			return
		}
	})
	return err
}

// Invalid is the error for a flag whose value parsed but is not allowed
// (checked after Parse and Apply): "--max-conns 0: must be at least 1
// (e.g. --max-conns 10000)", the value being the flag's current one, and
// the example from Examples or the default when problem has none. nil
// when problem is nil.
func (c *Command) Invalid(fs *flag.FlagSet, name string, problem error) error {
	if problem == nil {
		return nil
	}
	value := ""
	if f := fs.Lookup(name); f != nil {
		value = f.Value.String()
	}
	return &ValueError{Flag: name, Value: value, Err: c.withExample(fs, name, problem)}
}

// withExample appends "(e.g. --name GOOD)" to err unless it has an
// example already.
func (c *Command) withExample(fs *flag.FlagSet, name string, err error) error {
	if strings.Contains(err.Error(), "e.g.") {
		return err
	}
	ex := c.example(fs, name)
	if ex == "" {
		return err
	}
	return fmt.Errorf("%w (e.g. --%s %s)", err, name, ex)
}

// example is a good value of a flag: from Examples, else its default when
// that says something.
func (c *Command) example(fs *flag.FlagSet, name string) string {
	if ex := c.Examples[name]; ex != "" {
		return ex
	}
	if f := fs.Lookup(name); f != nil && !zeroDefault(f) {
		return f.DefValue
	}
	return ""
}

func zeroDefault(f *flag.Flag) bool {
	switch f.DefValue {
	case "", "false", "0", "0s":
		return true
	}
	return false
}

// group returns the title of the group a flag belongs to, "" if none.
func (c *Command) group(name string) string {
	for _, g := range c.Groups {
		for _, p := range g.Flags {
			if p == name || (strings.HasSuffix(p, "*") && strings.HasPrefix(name, strings.TrimSuffix(p, "*"))) {
				return g.Title
			}
		}
	}
	return ""
}

// Ungrouped returns the flags of fs (short aliases aside) that no group
// takes, and the exact (non-pattern) names of Groups that are no flag of
// fs: a test asserts both are empty, so a new flag cannot be left out of
// --help's topics.
func (c *Command) Ungrouped(fs *flag.FlagSet) (flags, unknown []string) {
	fs.VisitAll(func(f *flag.Flag) {
		if c.Short[f.Name] == "" && c.group(f.Name) == "" {
			flags = append(flags, f.Name)
		}
	})
	for _, g := range c.Groups {
		for _, p := range g.Flags {
			if !strings.HasSuffix(p, "*") && fs.Lookup(p) == nil {
				unknown = append(unknown, p)
			}
		}
	}
	return flags, unknown
}

// Help writes the help of fs: the usage lines, the intro, then the flags
// under their group titles, each as
//
//	--name TYPE, -s             [env PREFIX_NAME]
//	    what it does (default "x")
//
// with the variable beside every flag that reads one. Flags of no group
// come last, under "Other".
func (c *Command) Help(w io.Writer, fs *flag.FlagSet) {
	shorts := map[string][]string{}
	for s, long := range c.Short {
		shorts[long] = append(shorts[long], s)
	}
	type entry struct{ head, env, usage string }
	byGroup := map[string][]entry{}
	width := 0
	fs.VisitAll(func(f *flag.Flag) {
		if c.Short[f.Name] != "" {
			return
		}
		typ, usage := flag.UnquoteUsage(f)
		head := "  --" + f.Name
		if typ != "" {
			head += " " + typ
		}
		slices.Sort(shorts[f.Name])
		for _, s := range shorts[f.Name] {
			head += ", -" + s
		}
		if !zeroDefault(f) {
			def := f.DefValue
			if g, ok := f.Value.(flag.Getter); ok {
				if _, isString := g.Get().(string); isString {
					def = strconv.Quote(def) // as Go's own help: strings quoted
				}
			}
			usage += " (default " + def + ")"
		}
		e := entry{head: head, usage: usage}
		if vars := c.Env(f.Name); len(vars) > 0 {
			e.env = "[env " + strings.Join(vars, " or ") + "]"
			width = max(width, len(head))
		}
		g := c.group(f.Name)
		if g == "" {
			g = "Other"
		}
		byGroup[g] = append(byGroup[g], e)
	})
	fmt.Fprintf(w, "Usage: %s\n", strings.ReplaceAll(strings.TrimSpace(c.Usage), "\n", "\n       "))
	if c.Intro != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(c.Intro))
	}
	titles := make([]string, 0, len(c.Groups)+1)
	for _, g := range c.Groups {
		titles = append(titles, g.Title)
	}
	for _, title := range append(titles, "Other") {
		entries := byGroup[title]
		if len(entries) == 0 {
			continue
		}
		delete(byGroup, title) // a title listed twice prints once
		fmt.Fprintf(w, "\n%s:\n", title)
		for _, e := range entries {
			line := e.head
			if e.env != "" {
				line += strings.Repeat(" ", width-len(e.head)+2) + e.env
			}
			fmt.Fprintf(w, "%s\n      %s\n", line, e.usage)
		}
	}
}
