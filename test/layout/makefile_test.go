package layout_test

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// documentedTargets returns the targets of a Makefile that are declared
// .PHONY and carry a "## description" on their rule line: the ones
// `make help` promises to list.
func documentedTargets(makefile []byte) []string {
	phony := map[string]bool{}
	ruleRE := regexp.MustCompile(`^([^\s:#=]+)\s*:[^=].*##\s`)
	var rules []string
	sc := bufio.NewScanner(bytes.NewReader(makefile))
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, ".PHONY:"); ok {
			for _, n := range strings.Fields(rest) {
				phony[n] = true
			}
			continue
		}
		if m := ruleRE.FindStringSubmatch(line); m != nil {
			rules = append(rules, m[1])
		}
	}
	var out []string
	for _, r := range rules {
		if phony[r] {
			out = append(out, r)
		}
	}
	return out
}

// listedTargets returns the first word of each line of `make help`.
func listedTargets(help []byte) map[string]bool {
	got := map[string]bool{}
	for line := range strings.SplitSeq(string(help), "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			got[f[0]] = true
		}
	}
	return got
}

// TestMakeHelpListsEveryTarget runs `make help` and checks that every .PHONY
// target with a "##" description appears in it (the old awk pattern skipped
// names with digits, such as e2e).
func TestMakeHelpListsEveryTarget(t *testing.T) {
	makeBin, err := exec.LookPath("make")
	if err != nil {
		t.Skip("make is not installed: cannot run `make help`")
	}
	root := filepath.Join("..", "..")
	mf, err := os.ReadFile(filepath.Join(root, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	want := documentedTargets(mf)
	if len(want) < 5 {
		t.Fatalf("found only %d documented .PHONY targets (%v); the parser is broken", len(want), want)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, makeBin, "-s", "--no-print-directory", "help")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "MAKEFLAGS=", "MAKELEVEL=")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make help: %v\n%s", err, out)
	}
	got := listedTargets(out)
	for _, name := range want {
		if !got[name] {
			t.Errorf("make help does not list %q:\n%s", name, out)
		}
	}
}

// TestHelpAwkPattern runs the help rule's awk program over a Makefile with
// target names the old pattern dropped (digits, dots), so a regression in the
// pattern fails here even if the real Makefile has no such name left.
func TestHelpAwkPattern(t *testing.T) {
	awk, err := exec.LookPath("awk")
	if err != nil {
		t.Skip("awk is not installed")
	}
	root := filepath.Join("..", "..")
	mf, err := os.ReadFile(filepath.Join(root, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	// The program is the single-quoted argument of the awk call in the help rule.
	m := regexp.MustCompile(`(?m)^help:.*\n\t@?awk '([^']*)'`).FindSubmatch(mf)
	if m == nil {
		t.Fatal("no `awk '...'` line under the help rule in the Makefile")
	}
	prog := strings.ReplaceAll(string(m[1]), "$$", "$")
	sample := ".PHONY: e2e\ne2e: ## network test\n.PHONY: v1.2\nv1.2: build ## dotted\nplain: ## letters\nhidden:\n"
	dir := t.TempDir()
	p := filepath.Join(dir, "Makefile.sample")
	if err := os.WriteFile(p, []byte(sample), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(awk, prog, p).CombinedOutput()
	if err != nil {
		t.Fatalf("awk: %v\n%s", err, out)
	}
	got := listedTargets(out)
	for _, name := range []string{"e2e", "v1.2", "plain"} {
		if !got[name] {
			t.Errorf("the help pattern drops %q; output:\n%s", name, out)
		}
	}
	if got["hidden"] {
		t.Errorf("the help pattern lists a target without ##:\n%s", out)
	}
}
