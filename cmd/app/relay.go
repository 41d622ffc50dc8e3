package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/originlens/originlens/internal/relay"
)

// newRelay returns the upstream dialer of relay mode, or nil without
// --upstream. In transparent mode it first runs the start-up check (a test
// connection through the routing) and fails with the commands that are
// missing: the caller exits 2.
func newRelay(ctx context.Context, cfg config, log *slog.Logger) (*relay.Dialer, error) {
	if cfg.Upstream == "" {
		return nil, nil
	}
	d, err := relay.New(ctx, relay.Config{Upstream: cfg.Upstream, Mode: cfg.UpstreamMode, Mark: cfg.UpstreamMark})
	if err != nil {
		return nil, fmt.Errorf("--upstream: %w", err)
	}
	if cfg.UpstreamMode == relay.Transparent {
		if err := d.Check(ctx, 0); err != nil {
			return nil, fmt.Errorf("--upstream-mode transparent: %w", err)
		}
	}
	log.Info("relaying", "upstream", cfg.Upstream, "mode", cfg.UpstreamMode.String(), "mark", cfg.UpstreamMark)
	return d, nil
}
