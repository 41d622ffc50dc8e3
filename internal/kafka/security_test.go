package kafka

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/twmb/franz-go/pkg/kfake"
)

func TestSecurityValidate(t *testing.T) {
	tests := []struct {
		name string
		s    Security
		ok   bool
	}{
		{"Plain", Security{}, true},
		{"NoneSpelled", Security{SASL: "none"}, true},
		{"TLSSystemRoots", Security{TLS: true}, true},
		{"TLSCAFile", Security{TLS: true, CAFile: "/ca.pem"}, true},
		{"CAFileWithoutTLS", Security{CAFile: "/ca.pem"}, false},
		{"SCRAM", Security{SASL: "scram-sha-512", Username: "u", Password: "p"}, true},
		{"SCRAMNoPassword", Security{SASL: "scram-sha-512", Username: "u"}, false},
		{"SCRAMNoUser", Security{SASL: "scram-sha-512", Password: "p"}, false},
		{"UserWithoutSASL", Security{Username: "u", Password: "p"}, false},
		{"IAM", Security{TLS: true, SASL: "aws-msk-iam", AWSRegion: "eu-west-1"}, true},
		{"IAMWithoutTLS", Security{SASL: "aws-msk-iam"}, false},
		{"IAMWithPassword", Security{TLS: true, SASL: "aws-msk-iam", Username: "u", Password: "p"}, false},
		{"UnknownMechanism", Security{SASL: "plain"}, false},
		{"WrongCase", Security{SASL: "SCRAM-SHA-512", Username: "u", Password: "p"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.s.Validate()
			if tt.ok && err != nil {
				t.Errorf("Validate(%+v) = %v, want nil", tt.s, err)
			}
			if !tt.ok && !errors.Is(err, ErrBadSecurity) {
				t.Errorf("Validate(%+v) = %v, want ErrBadSecurity", tt.s, err)
			}
		})
	}
}

func TestTLSConfigCAFile(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	ca := newTestCA(t, "ca")

	if _, err := (Security{TLS: true, CAFile: filepath.Join(dir, "missing.pem")}).TLSConfig(); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("TLSConfig(missing CA file) = %v, want ErrNotExist", err)
	}
	if _, err := (Security{TLS: true, CAFile: notPEM}).TLSConfig(); !errors.Is(err, ErrBadSecurity) {
		t.Errorf("TLSConfig(not PEM) = %v, want ErrBadSecurity", err)
	}
	cfg, err := (Security{TLS: true, CAFile: ca.pemPath}).TLSConfig()
	if err != nil || cfg == nil || cfg.RootCAs == nil {
		t.Fatalf("TLSConfig(CA) = %v, %v; want a config with the CA pool", cfg, err)
	}
	if cfg, err := (Security{}).TLSConfig(); cfg != nil || err != nil {
		t.Errorf("TLSConfig(off) = %v, %v; want nil, nil", cfg, err)
	}
}

// checkBoth talks to the broker once through Security.Transport (a
// kafka-go Client metadata call) and once through Security.Dialer (a
// connection reading the partitions), and returns the errors.
func checkBoth(t *testing.T, s Security, addr string) (transportErr, dialerErr error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tr, err := s.Transport(ctx)
	if err != nil {
		t.Fatalf("Transport: %v", err)
	}
	defer tr.CloseIdleConnections()
	c := &kafkago.Client{Addr: kafkago.TCP(addr), Transport: tr, Timeout: 10 * time.Second}
	_, transportErr = c.Metadata(ctx, &kafkago.MetadataRequest{})

	d, err := s.Dialer(ctx)
	if err != nil {
		t.Fatalf("Dialer: %v", err)
	}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err == nil {
		_, err = conn.ReadPartitions()
		conn.Close()
	}
	return transportErr, err
}

func TestSecurityTLS(t *testing.T) {
	ca := newTestCA(t, "ca")
	c := startCluster(t, kfake.TLS(ca.serverTLS(t)))
	addr := c.ListenAddrs()[0]

	t.Run("TrustedCA", func(t *testing.T) {
		te, de := checkBoth(t, Security{TLS: true, CAFile: ca.pemPath}, addr)
		if te != nil || de != nil {
			t.Errorf("TLS with the right CA: transport %v, dialer %v; want nil, nil", te, de)
		}
	})
	t.Run("OtherCA", func(t *testing.T) {
		other := newTestCA(t, "other")
		te, de := checkBoth(t, Security{TLS: true, CAFile: other.pemPath}, addr)
		var uae x509.UnknownAuthorityError
		if !errors.As(te, &uae) {
			t.Errorf("transport with a foreign CA: %v, want x509.UnknownAuthorityError", te)
		}
		if !errors.As(de, &uae) {
			t.Errorf("dialer with a foreign CA: %v, want x509.UnknownAuthorityError", de)
		}
	})
}

func TestSecuritySCRAM(t *testing.T) {
	c := startCluster(t, kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-512", "alice", "s3cret"))
	addr := c.ListenAddrs()[0]

	te, de := checkBoth(t, Security{SASL: SASLSCRAM512, Username: "alice", Password: "s3cret"}, addr)
	if te != nil || de != nil {
		t.Errorf("SCRAM with the right password: transport %v, dialer %v; want nil, nil", te, de)
	}
	te, de = checkBoth(t, Security{SASL: SASLSCRAM512, Username: "alice", Password: "wrong"}, addr)
	// The transport sees kfake hang up after the failed SaslAuthenticate
	// (io.ErrUnexpectedEOF) rather than the error code; what matters is
	// that nothing gets through.
	if te == nil {
		t.Errorf("transport with a wrong password: nil error, want a refusal")
	}
	if !errors.Is(de, kafkago.SASLAuthenticationFailed) {
		t.Errorf("dialer with a wrong password: %v, want SASLAuthenticationFailed", de)
	}
}

func TestSecurityTLSAndSCRAM(t *testing.T) {
	ca := newTestCA(t, "ca")
	c := startCluster(t, kfake.TLS(ca.serverTLS(t)), kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-512", "bob", "pw"))
	te, de := checkBoth(t, Security{TLS: true, CAFile: ca.pemPath, SASL: SASLSCRAM512, Username: "bob", Password: "pw"}, c.ListenAddrs()[0])
	if te != nil || de != nil {
		t.Errorf("TLS+SCRAM: transport %v, dialer %v; want nil, nil", te, de)
	}
}

// isolateAWS points the AWS SDK at empty config files and static test
// credentials, so the test never reads the machine's AWS settings.
func isolateAWS(t *testing.T, region string) {
	dir := t.TempDir()
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "config"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "credentials"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_DEFAULT_REGION", "")
	t.Setenv("AWS_REGION", region)
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
	t.Setenv("AWS_SESSION_TOKEN", "")
}

func TestSecurityMSKIAM(t *testing.T) {
	t.Run("RegionFlagWins", func(t *testing.T) {
		isolateAWS(t, "us-east-1")
		m, err := Security{TLS: true, SASL: SASLAWSMSKIAM, AWSRegion: "eu-west-1"}.Mechanism(context.Background())
		if err != nil {
			t.Fatalf("Mechanism: %v", err)
		}
		if m.Name() != "AWS_MSK_IAM" {
			t.Errorf("Mechanism().Name() = %q, want AWS_MSK_IAM", m.Name())
		}
		// The first SASL message is the SigV4-presigned JSON MSK checks.
		ctx := sasl.WithMetadata(context.Background(), &sasl.Metadata{Host: "b-1.example.kafka.eu-west-1.amazonaws.com", Port: 9098})
		_, ir, err := m.Start(ctx)
		if err != nil {
			t.Fatalf("Start: %v", err)
		}
		var signed map[string]string
		if err := json.Unmarshal(ir, &signed); err != nil {
			t.Fatalf("initial response %q: %v", ir, err)
		}
		if cred := signed["x-amz-credential"]; !strings.HasPrefix(cred, "AKIDEXAMPLE/") || !strings.Contains(cred, "/eu-west-1/kafka-cluster/aws4_request") {
			t.Errorf("x-amz-credential = %q, want AKIDEXAMPLE/<date>/eu-west-1/kafka-cluster/aws4_request", cred)
		}
		if signed["action"] != "kafka-cluster:Connect" || signed["x-amz-signature"] == "" {
			t.Errorf("signed payload %v lacks the Connect action or a signature", signed)
		}
	})
	t.Run("RegionFromEnvironment", func(t *testing.T) {
		isolateAWS(t, "ap-southeast-2")
		m, err := Security{TLS: true, SASL: SASLAWSMSKIAM}.Mechanism(context.Background())
		if err != nil {
			t.Fatalf("Mechanism: %v", err)
		}
		ctx := sasl.WithMetadata(context.Background(), &sasl.Metadata{Host: "b-1", Port: 9098})
		_, ir, err := m.Start(ctx)
		if err != nil || !strings.Contains(string(ir), "/ap-southeast-2/kafka-cluster/") {
			t.Errorf("Start = %s, %v; want a credential scoped to ap-southeast-2", ir, err)
		}
	})
	t.Run("NoRegion", func(t *testing.T) {
		isolateAWS(t, "")
		if _, err := (Security{TLS: true, SASL: SASLAWSMSKIAM}).Transport(context.Background()); !errors.Is(err, ErrBadSecurity) {
			t.Errorf("Transport without a region = %v, want ErrBadSecurity", err)
		}
	})
	t.Run("OnTheWire", func(t *testing.T) {
		// kfake speaks SCRAM and PLAIN only, so it must refuse AWS_MSK_IAM
		// in the SASL handshake: proof the transport and the dialer offer
		// the IAM mechanism over TLS.
		isolateAWS(t, "eu-west-1")
		ca := newTestCA(t, "ca")
		c := startCluster(t, kfake.TLS(ca.serverTLS(t)), kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-512", "x", "y"))
		te, de := checkBoth(t, Security{TLS: true, CAFile: ca.pemPath, SASL: SASLAWSMSKIAM}, c.ListenAddrs()[0])
		if !errors.Is(te, kafkago.UnsupportedSASLMechanism) {
			t.Errorf("transport: %v, want UnsupportedSASLMechanism", te)
		}
		if !errors.Is(de, kafkago.UnsupportedSASLMechanism) {
			t.Errorf("dialer: %v, want UnsupportedSASLMechanism", de)
		}
	})
}
