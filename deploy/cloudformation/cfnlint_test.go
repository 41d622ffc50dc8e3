package cloudformation_test

import (
	"context"
	"encoding/json"
	"errors"
	"os/exec"
	"testing"
	"time"
)

// cfnLintFinding is one entry of `cfn-lint -f json`.
type cfnLintFinding struct {
	Rule struct {
		ID string `json:"Id"`
	} `json:"Rule"`
	Level    string `json:"Level"`
	Message  string `json:"Message"`
	Filename string `json:"Filename"`
	Location struct {
		Start struct {
			LineNumber int `json:"LineNumber"`
		} `json:"Start"`
	} `json:"Location"`
}

// TestCfnLint runs cfn-lint over every template with the us-east-2 resource
// schemas (they differ per region) and fails on any finding, warnings
// included.
func TestCfnLint(t *testing.T) {
	t.Parallel() // a slow external process; the other tests need not wait
	bin, err := exec.LookPath("cfn-lint")
	if err != nil {
		t.Skip("cfn-lint is not installed (pip install cfn-lint==1.51.0); schema conformance unchecked")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// "--" ends --regions, which takes several values.
	args := append([]string{"-f", "json", "--regions", "us-east-2", "--"}, templateFiles...)
	cmd := exec.CommandContext(ctx, bin, args...)
	out, err := cmd.Output()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("cfn-lint: %v", err)
	}
	var findings []cfnLintFinding
	if jerr := json.Unmarshal(out, &findings); jerr != nil {
		stderr := ""
		if exit != nil {
			stderr = string(exit.Stderr)
		}
		t.Fatalf("cfn-lint output is not JSON (%v): %s %s", jerr, out, stderr)
	}
	if version, verr := exec.CommandContext(ctx, bin, "--version").Output(); verr == nil {
		t.Logf("%s", version)
	}
	for _, f := range findings {
		t.Errorf("%s:%d: %s %s: %s", f.Filename, f.Location.Start.LineNumber, f.Level, f.Rule.ID, f.Message)
	}
	// Exit status is a bitmask: 2 error, 4 warning, 8 informational.
	if exit != nil && len(findings) == 0 {
		t.Errorf("cfn-lint exited %d without findings: %s", exit.ExitCode(), exit.Stderr)
	}
}
