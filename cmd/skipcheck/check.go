package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"
)

// event is one line of `go test -json` (cmd/test2json's TestEvent), as
// gotestsum's --jsonfile writes it too.
type event struct {
	Action  string
	Package string
	Test    string
	Output  string
}

// Skip is one skipped test and the reason it printed.
type Skip struct {
	Package string
	Test    string
	Reason  string
}

func (s Skip) String() string {
	r := s.Reason
	if r == "" {
		r = "(no reason printed)"
	}
	return fmt.Sprintf("%s %s: %s", s.Package, s.Test, r)
}

// Report is what a run did: tests passed, failed and skipped.
type Report struct {
	Passed, Failed int
	Skipped        []Skip
}

// Tests is the number of tests that ran to an outcome.
func (r Report) Tests() int { return r.Passed + r.Failed + len(r.Skipped) }

// maxLine bounds one JSON line; a test printing a longer line is cut off
// and reported as an error rather than read without limit.
const maxLine = 4 << 20

// Read reads a `go test -json` stream. Output lines of a skipped test other
// than the === and --- framing are its reason.
func Read(r io.Reader) (Report, error) {
	type key struct{ pkg, test string }
	output := map[key][]string{}
	var rep Report
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxLine)
	line := 0
	for sc.Scan() {
		line++
		b := sc.Bytes()
		if len(b) == 0 || b[0] != '{' {
			continue // go test prints build failures as plain text
		}
		var e event
		if err := json.Unmarshal(b, &e); err != nil {
			return rep, fmt.Errorf("line %d: %w", line, err)
		}
		if e.Test == "" {
			continue // package-level events
		}
		k := key{e.Package, e.Test}
		switch e.Action {
		case "output":
			if o := strings.TrimSpace(e.Output); o != "" && !strings.HasPrefix(o, "=== ") && !strings.HasPrefix(o, "--- ") {
				output[k] = append(output[k], o)
			}
		case "pass":
			rep.Passed++
			delete(output, k)
		case "fail":
			rep.Failed++
			delete(output, k)
		case "skip":
			rep.Skipped = append(rep.Skipped, Skip{Package: e.Package, Test: e.Test, Reason: strings.Join(output[k], " / ")})
			delete(output, k)
		}
	}
	if err := sc.Err(); err != nil {
		return rep, fmt.Errorf("line %d: %w", line+1, err)
	}
	sort.Slice(rep.Skipped, func(i, j int) bool {
		a, b := rep.Skipped[i], rep.Skipped[j]
		if a.Package != b.Package {
			return a.Package < b.Package
		}
		return a.Test < b.Test
	})
	return rep, nil
}

// Rule allows tests to skip in CI: those of a package (its import path, or
// a path suffix such as internal/opensearch) whose top-level name matches a
// pattern, for a stated reason.
type Rule struct {
	Package string
	Test    *regexp.Regexp
	Why     string
}

// ParseAllow reads an allow list: one rule a line, "package test-regexp
// why", # comments and blank lines ignored. A rule without a reason is an
// error: the list exists to say why.
func ParseAllow(r io.Reader) ([]Rule, error) {
	var rules []Rule
	sc := bufio.NewScanner(r)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 3 {
			return nil, fmt.Errorf("line %d: want \"package test-regexp why\", got %q", n, line)
		}
		re, err := regexp.Compile("^(?:" + f[1] + ")$")
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		rules = append(rules, Rule{Package: f[0], Test: re, Why: strings.Join(f[2:], " ")})
	}
	return rules, sc.Err()
}

// Allows reports whether the rule covers s. A subtest is covered by a rule
// for its top-level test.
func (r Rule) Allows(s Skip) bool {
	if s.Package != r.Package && !strings.HasSuffix(s.Package, "/"+r.Package) {
		return false
	}
	top, _, _ := strings.Cut(s.Test, "/")
	return r.Test.MatchString(top)
}

// Unexpected returns the skips no rule allows.
func Unexpected(rep Report, rules []Rule) []Skip {
	var out []Skip
	for _, s := range rep.Skipped {
		allowed := false
		for _, r := range rules {
			if r.Allows(s) {
				allowed = true
				break
			}
		}
		if !allowed {
			out = append(out, s)
		}
	}
	return out
}
