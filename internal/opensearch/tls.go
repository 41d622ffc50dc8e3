package opensearch

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
)

func tlsConfig(caPEM []byte, insecure bool) (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: insecure} //nolint:gosec // operator's explicit --opensearch-insecure
	if len(caPEM) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			return nil, errors.New("opensearch: CA file holds no PEM certificate")
		}
		c.RootCAs = pool
	}
	return c, nil
}
