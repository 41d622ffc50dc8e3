// Command skipcheck reads the `go test -json` output of a test run (the file
// `make test` writes through gotestsum's --jsonfile) and fails when a test
// skipped that the allow list does not permit to skip. CI installs every
// tool the real-peer tests need, so there a skip means a test silently did
// not run; .ci/run calls it after `make test` when CI=true.
//
//	skipcheck --allow .ci/skips-allowed testoutput/go-test.json
//
// Exit status: 0 every skip is allowed, 1 a skip is not (or no test ran), 2
// bad flags or an unreadable file.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/originlens/originlens/internal/flagenv"
)

// Config is skipcheck's configuration.
type Config struct {
	Allow string // allow-list file
	JSON  string // go test -json output; "-" is stdin
}

func main() {
	cfg, err := parseFlags(os.Args[1:], os.LookupEnv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "skipcheck:", err)
		os.Exit(2)
	}
	code, err := run(cfg, os.Stdin, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "skipcheck:", err)
	}
	os.Exit(code)
}

// parseFlags reads the flags; every flag falls back to SKIPCHECK_<NAME>.
func parseFlags(args []string, lookup func(string) (string, bool), stderr io.Writer) (Config, error) {
	var cfg Config
	fs := flag.NewFlagSet("skipcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.Allow, "allow", ".ci/skips-allowed", "allow list: `FILE` of \"package test-regexp why\" lines [env SKIPCHECK_ALLOW]")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: skipcheck [--allow FILE] GO-TEST-JSON-FILE")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if err := flagenv.Apply(fs, "SKIPCHECK_", lookup); err != nil {
		return cfg, err
	}
	if fs.NArg() != 1 {
		return cfg, fmt.Errorf("want one go test -json file, got %d arguments (example: skipcheck testoutput/go-test.json)", fs.NArg())
	}
	cfg.JSON = fs.Arg(0)
	return cfg, nil
}
