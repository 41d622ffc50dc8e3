package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// goTestJSON runs `go test -json` on a throwaway module whose tests pass,
// skip with a reason, skip a subtest and skip without a reason, so the
// reader is tested on what the go command really writes.
func goTestJSON(t *testing.T) []byte {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go is not in PATH: cannot produce real go test -json output")
	}
	dir := t.TempDir()
	files := map[string]string{
		"go.mod": "module example.com/skipdemo\n\ngo 1.22\n",
		"a/a_test.go": `package a

import "testing"

func TestPasses(t *testing.T) {}
func TestNeedsTool(t *testing.T) { t.Log("looking for frobnicate"); t.Skip("frobnicate not installed (apt-get install frobnicate)") }
func TestSub(t *testing.T) {
	t.Run("ok", func(t *testing.T) {})
	t.Run("v6", func(t *testing.T) { t.Skipf("no IPv6 loopback here: %v", "EADDRNOTAVAIL") })
}
func TestSilent(t *testing.T) { t.SkipNow() }
`,
		"b/b_test.go": `package b

import "testing"

func TestRealCluster(t *testing.T) { t.Skip("OPENSEARCH_URL not set") }
`,
	}
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, "test", "-json", "-count=1", "./...")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off", "GOTOOLCHAIN=local")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go test -json: %v\n%s", err, out)
	}
	return out
}

func TestReadRealGoTestJSON(t *testing.T) {
	rep, err := Read(bytes.NewReader(goTestJSON(t)))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Passed != 3 || rep.Failed != 0 { // TestPasses, TestSub/ok, TestSub (the parent passes)
		t.Errorf("passed %d failed %d, want 3 and 0", rep.Passed, rep.Failed)
	}
	got := map[string]string{}
	for _, s := range rep.Skipped {
		got[s.Package+" "+s.Test] = s.Reason
	}
	want := map[string]string{
		"example.com/skipdemo/a TestNeedsTool":   "frobnicate not installed (apt-get install frobnicate)",
		"example.com/skipdemo/a TestSub/v6":      "no IPv6 loopback here: EADDRNOTAVAIL",
		"example.com/skipdemo/a TestSilent":      "",
		"example.com/skipdemo/b TestRealCluster": "OPENSEARCH_URL not set",
	}
	if len(got) != len(want) {
		t.Errorf("skipped %v, want %v", got, want)
	}
	for k, reason := range want {
		r, ok := got[k]
		if !ok {
			t.Errorf("skip of %s not found in %v", k, got)
			continue
		}
		// The reason line carries the file:line prefix of t.Skip.
		if !strings.Contains(r, reason) {
			t.Errorf("%s: reason %q, want it to contain %q", k, r, reason)
		}
		if k == "example.com/skipdemo/a TestNeedsTool" && !strings.Contains(r, "looking for frobnicate") {
			t.Errorf("%s: reason %q lost the test's log line", k, r)
		}
	}
}

func TestUnexpectedSkips(t *testing.T) {
	rules, err := ParseAllow(strings.NewReader(`
# comment
b              TestRealCluster   no cluster in CI
skipdemo/a     TestSub           IPv6 may be missing
`))
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Read(bytes.NewReader(goTestJSON(t)))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range Unexpected(rep, rules) {
		names = append(names, s.Test)
	}
	if got := strings.Join(names, ","); got != "TestNeedsTool,TestSilent" {
		t.Errorf("unexpected skips %q, want TestNeedsTool,TestSilent", got)
	}
}

func TestParseAllowErrors(t *testing.T) {
	for _, bad := range []string{
		"internal/x TestY\n",               // no reason
		"internal/x Test( missing paren\n", // bad regexp
	} {
		if _, err := ParseAllow(strings.NewReader(bad)); err == nil {
			t.Errorf("ParseAllow(%q) accepted it", bad)
		}
	}
	// A rule is anchored: TestReal does not allow TestRealCluster.
	rules, err := ParseAllow(strings.NewReader("pkg TestReal why\n"))
	if err != nil {
		t.Fatal(err)
	}
	if rules[0].Allows(Skip{Package: "m/pkg", Test: "TestRealCluster"}) {
		t.Error("rule TestReal allowed TestRealCluster: patterns must match the whole name")
	}
	if rules[0].Allows(Skip{Package: "m/otherpkg", Test: "TestReal"}) {
		t.Error("rule for pkg allowed otherpkg: packages match whole path elements")
	}
}

// TestRunExitStatus drives the command's run over a real test output with
// the repository's own allow list: the stand-in tests' skips are not in it,
// so the run must fail and name them; with them allowed it passes; an
// output with no test fails.
func TestRunExitStatus(t *testing.T) {
	dir := t.TempDir()
	jsonFile := filepath.Join(dir, "go-test.json")
	if err := os.WriteFile(jsonFile, goTestJSON(t), 0o644); err != nil {
		t.Fatal(err)
	}
	repoAllow := filepath.Join("..", "..", ".ci", "skips-allowed")
	var out bytes.Buffer
	code, err := run(Config{Allow: repoAllow, JSON: jsonFile}, nil, &out)
	if err != nil || code != 1 {
		t.Fatalf("run with the repository's list: code %d err %v, want 1\n%s", code, err, out.String())
	}
	for _, want := range []string{"4 skipped, 0 of them allowed", "TestNeedsTool: ", "frobnicate not installed", "TestSilent: (no reason printed)", "TestRealCluster"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}

	allowAll := filepath.Join(dir, "allow")
	if err := os.WriteFile(allowAll, []byte("skipdemo/a Test.* stand-ins\nskipdemo/b TestRealCluster stand-in\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if code, err := run(Config{Allow: allowAll, JSON: jsonFile}, nil, &out); err != nil || code != 0 {
		t.Errorf("run with every skip allowed: code %d err %v, want 0\n%s", code, err, out.String())
	}

	empty := filepath.Join(dir, "empty.json")
	if err := os.WriteFile(empty, []byte(`{"Action":"start","Package":"x"}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _ := run(Config{Allow: allowAll, JSON: empty}, nil, &out); code != 1 {
		t.Errorf("run over a run with no test: code %d, want 1", code)
	}
	if code, _ := run(Config{Allow: filepath.Join(dir, "missing"), JSON: jsonFile}, nil, &out); code != 2 {
		t.Errorf("run with a missing allow list: code %d, want 2", code)
	}
}
