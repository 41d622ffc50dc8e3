package opensearch

import "errors"

// Outcome is what the ingest does with one bulk item (or one whole request).
type Outcome int

const (
	// Indexed: OpenSearch holds the document (2xx), or already held it
	// (409 version conflict on create: a redelivery).
	Indexed Outcome = iota
	// Retry: a transient failure (429 rejected execution, 5xx, timeout);
	// resend the item after a backoff.
	Retry
	// DeadLetter: the document itself is wrong for the index (400 mapping
	// or parse error); resending cannot help. Send it to the DLQ.
	DeadLetter
	// Blocked: the cluster refuses writes until an operator acts (a
	// cluster_block_exception such as the flood-stage read-only-allow-delete
	// block, missing permissions, a closed or missing index). Retry with
	// backoff, loudly; never drop, never commit.
	Blocked
)

func (o Outcome) String() string {
	switch o {
	case Indexed:
		return "indexed"
	case Retry:
		return "retry"
	case DeadLetter:
		return "dead_letter"
	case Blocked:
		return "blocked"
	}
	return "unknown"
}

// ErrTypeClusterBlock is the error type of write blocks: flood stage and
// read-only indices (403 or 429: Blocked), or no cluster manager (503: a
// transient Retry).
const ErrTypeClusterBlock = "cluster_block_exception"

// Classify decides the outcome of one bulk item.
func Classify(it BulkItem) Outcome {
	if it.ErrType == ErrTypeClusterBlock && it.Status < 500 {
		return Blocked // flood stage, read-only index: needs an operator
	}
	switch s := it.Status; {
	case s >= 200 && s < 300:
		return Indexed
	case s == 409:
		return Indexed
	case s == 429, s >= 500:
		return Retry
	case s == 400:
		return DeadLetter
	case s == 0:
		return Retry // no status: treat as transient
	default: // 401, 403, 404, 413...: configuration, not the document
		return Blocked
	}
}

// ClassifyError decides the outcome of a bulk request that failed as a whole.
// It never returns DeadLetter: a whole request is never the fault of one
// document that the ingest could identify.
func ClassifyError(err error) Outcome {
	var se *StatusError
	if errors.As(err, &se) {
		if se.Type == ErrTypeClusterBlock && se.Status < 500 {
			return Blocked
		}
		if se.Status == 429 || se.Status >= 500 {
			return Retry
		}
		return Blocked
	}
	// transport errors and timeouts
	return Retry
}
