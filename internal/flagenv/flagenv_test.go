package flagenv_test

import (
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
		{"BadEnv", nil, map[string]string{"T_TIMEOUT": "soon"}, "def", time.Second, `invalid value "soon" for T_TIMEOUT`},
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
