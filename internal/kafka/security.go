package kafka

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	kafkago "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/aws_msk_iam_v2"
	"github.com/segmentio/kafka-go/sasl/scram"
)

// SASL mechanism names accepted in [Security.SASL] (the --kafka-sasl values).
const (
	SASLNone      = "none"
	SASLSCRAM512  = "scram-sha-512"
	SASLAWSMSKIAM = "aws-msk-iam"
)

// ErrBadSecurity is wrapped by every configuration error [Security.Validate]
// returns, so callers can tell a bad flag from a broker failure.
var ErrBadSecurity = errors.New("kafka: bad security settings")

// dialTimeout bounds the TCP connect plus TLS and SASL handshakes.
const dialTimeout = 10 * time.Second

// Validate checks the settings without touching files, the network or AWS.
// The rules:
//   - SASL is "", "none", "scram-sha-512" or "aws-msk-iam";
//   - scram-sha-512 needs Username and Password;
//   - aws-msk-iam needs TLS (MSK's IAM listener, port 9098, is TLS only)
//     and no Username/Password (credentials come from the AWS chain);
//   - CAFile needs TLS.
func (s Security) Validate() error {
	switch s.SASL {
	case "", SASLNone:
		if s.Username != "" || s.Password != "" {
			return fmt.Errorf("%w: a username or password needs --kafka-sasl scram-sha-512", ErrBadSecurity)
		}
	case SASLSCRAM512:
		if s.Username == "" || s.Password == "" {
			return fmt.Errorf("%w: --kafka-sasl scram-sha-512 needs --kafka-username and --kafka-password", ErrBadSecurity)
		}
	case SASLAWSMSKIAM:
		if !s.TLS {
			return fmt.Errorf("%w: --kafka-sasl aws-msk-iam needs --kafka-tls (the MSK IAM listener, port 9098, is TLS only)", ErrBadSecurity)
		}
		if s.Username != "" || s.Password != "" {
			return fmt.Errorf("%w: --kafka-sasl aws-msk-iam takes its credentials from the AWS chain, not --kafka-username/--kafka-password", ErrBadSecurity)
		}
	default:
		return fmt.Errorf("%w: --kafka-sasl %q: want none, scram-sha-512 or aws-msk-iam", ErrBadSecurity, s.SASL)
	}
	if s.CAFile != "" && !s.TLS {
		return fmt.Errorf("%w: --kafka-ca-file needs --kafka-tls", ErrBadSecurity)
	}
	return nil
}

// TLSConfig returns the client TLS configuration: nil when TLS is off; the
// system roots, or only the certificates of CAFile when it is set. The
// server name is left empty: kafka-go fills it in per broker.
func (s Security) TLSConfig() (*tls.Config, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	if !s.TLS {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if s.CAFile == "" {
		return cfg, nil
	}
	pem, err := os.ReadFile(s.CAFile)
	if err != nil {
		return nil, fmt.Errorf("reading kafka CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%w: kafka CA file %s holds no PEM certificate", ErrBadSecurity, s.CAFile)
	}
	cfg.RootCAs = pool
	return cfg, nil
}

// Mechanism returns the SASL mechanism: nil when SASL is off. For
// aws-msk-iam it loads the default AWS configuration (environment, shared
// files, web identity, ECS task role, EC2 instance role) with AWSRegion
// overriding the configured region; credentials are fetched lazily at each
// broker handshake, so a missing credential shows as a broker error, not
// here. ctx bounds the loading of the AWS configuration.
func (s Security) Mechanism(ctx context.Context) (sasl.Mechanism, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	switch s.SASL {
	case SASLSCRAM512:
		m, err := scram.Mechanism(scram.SHA512, s.Username, s.Password)
		if err != nil {
			return nil, fmt.Errorf("preparing SCRAM-SHA-512: %w", err)
		}
		return m, nil
	case SASLAWSMSKIAM:
		var opts []func(*awsconfig.LoadOptions) error
		if s.AWSRegion != "" {
			opts = append(opts, awsconfig.WithRegion(s.AWSRegion))
		}
		cfg, err := awsconfig.LoadDefaultConfig(ctx, opts...)
		if err != nil {
			return nil, fmt.Errorf("loading AWS config for MSK IAM: %w", err)
		}
		if cfg.Region == "" {
			return nil, fmt.Errorf("%w: --kafka-sasl aws-msk-iam needs a region: set --kafka-aws-region or AWS_REGION", ErrBadSecurity)
		}
		return aws_msk_iam_v2.NewMechanism(cfg), nil
	}
	return nil, nil
}

// Transport returns a kafka-go transport for writers and admin calls
// ([kafkago.Client]) with the TLS and SASL settings. ctx only bounds
// building it (the AWS configuration); the transport is not tied to it.
func (s Security) Transport(ctx context.Context) (*kafkago.Transport, error) {
	tlsCfg, err := s.TLSConfig()
	if err != nil {
		return nil, err
	}
	mech, err := s.Mechanism(ctx)
	if err != nil {
		return nil, err
	}
	return &kafkago.Transport{
		Dial:        (&net.Dialer{Timeout: dialTimeout}).DialContext,
		DialTimeout: dialTimeout,
		ClientID:    "originlens",
		TLS:         tlsCfg,
		SASL:        mech,
	}, nil
}

// Dialer returns a kafka-go dialer for readers with the TLS and SASL
// settings. ctx only bounds building it.
func (s Security) Dialer(ctx context.Context) (*kafkago.Dialer, error) {
	tlsCfg, err := s.TLSConfig()
	if err != nil {
		return nil, err
	}
	mech, err := s.Mechanism(ctx)
	if err != nil {
		return nil, err
	}
	return &kafkago.Dialer{
		ClientID:      "originlens",
		Timeout:       dialTimeout,
		DualStack:     true,
		TLS:           tlsCfg,
		SASLMechanism: mech,
	}, nil
}
