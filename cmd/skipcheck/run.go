package main

import (
	"fmt"
	"io"
	"os"
)

// run checks the run in cfg.JSON against the allow list and returns the
// exit status: 0 all skips allowed, 1 some not (or no test ran), 2 when a
// file cannot be read.
func run(cfg Config, stdin io.Reader, stdout io.Writer) (int, error) {
	af, err := os.Open(cfg.Allow)
	if err != nil {
		return 2, fmt.Errorf("allow list: %w", err)
	}
	defer af.Close()
	rules, err := ParseAllow(af)
	if err != nil {
		return 2, fmt.Errorf("allow list %s: %w", cfg.Allow, err)
	}
	in := stdin
	if cfg.JSON != "-" {
		f, err := os.Open(cfg.JSON)
		if err != nil {
			return 2, fmt.Errorf("test output: %w", err)
		}
		defer f.Close()
		in = f
	}
	rep, err := Read(in)
	if err != nil {
		return 2, fmt.Errorf("test output %s: %w", cfg.JSON, err)
	}
	if rep.Tests() == 0 {
		fmt.Fprintf(stdout, "skipcheck: no test ran (%s)\n", cfg.JSON)
		return 1, nil
	}
	bad := Unexpected(rep, rules)
	fmt.Fprintf(stdout, "skipcheck: %d tests, %d skipped, %d of them allowed to skip in CI by %s\n",
		rep.Tests(), len(rep.Skipped), len(rep.Skipped)-len(bad), cfg.Allow)
	if len(bad) == 0 {
		return 0, nil
	}
	fmt.Fprintf(stdout, "skipcheck: %d tests skipped that CI installs the tools for (fix the install in .ci/run, or add a line to %s saying why):\n", len(bad), cfg.Allow)
	for _, s := range bad {
		fmt.Fprintf(stdout, "  %s\n", s)
	}
	return 1, nil
}
