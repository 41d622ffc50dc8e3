package probe_test

import "github.com/originlens/originlens/internal/syncbuf"

type syncBuf = syncbuf.Buffer
