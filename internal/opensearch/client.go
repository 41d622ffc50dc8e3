// Package opensearch is cmd/ingest's OpenSearch client: bulk requests with
// per-item results, the classification of those results (indexed,
// retry, dead-letter, write-blocked), and the idempotent setup of the index
// template, the ISM retention policy and the Dashboards saved objects.
//
// It wraps github.com/opensearch-project/opensearch-go/v4 (basic auth, TLS,
// SigV4 through signer/awsv2). The client's own retries are disabled: the
// ingest pipeline retries item by item with its own backoff, so that a
// partially failed bulk never resends the items that were accepted.
package opensearch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	opensearchgo "github.com/opensearch-project/opensearch-go/v4"
	"github.com/opensearch-project/opensearch-go/v4/opensearchapi"
	"github.com/opensearch-project/opensearch-go/v4/signer"
	"github.com/opensearch-project/opensearch-go/v4/signer/awsv2"
	"github.com/tidwall/gjson"
)

// Config says how to reach the cluster.
type Config struct {
	URLs     []string // --opensearch-url, comma separated
	Username string   // basic auth
	Password string
	// AWSRegion enables SigV4 signing for Amazon OpenSearch Service
	// (service "es") with credentials from the default AWS chain.
	AWSRegion string
	// AWSService is the SigV4 service name: "es" (default) for managed
	// domains, "aoss" for Serverless.
	AWSService string
	CAFile     string        // PEM CA bundle for self-signed clusters
	Insecure   bool          // skip TLS verification (local clusters only)
	Timeout    time.Duration // per request; 0: 60s
}

// Client talks to one OpenSearch cluster. It is safe for concurrent use.
type Client struct {
	api    *opensearchapi.Client
	signer signer.Signer // nil without SigV4
	cfg    Config
	http   *http.Client // for Dashboards, which is not an OpenSearch node
}

// New builds a client. It does not contact the cluster.
func New(ctx context.Context, cfg Config) (*Client, error) {
	if len(cfg.URLs) == 0 {
		return nil, errors.New("opensearch: no URL")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 60 * time.Second
	}
	oc := opensearchgo.Config{
		Addresses:             cfg.URLs,
		Username:              cfg.Username,
		Password:              cfg.Password,
		InsecureSkipVerify:    cfg.Insecure,
		DisableRetry:          true, // the pipeline retries item by item
		RequestTimeout:        cfg.Timeout,
		HealthCheckMaxRetries: -1,
		Transport:             &http.Transport{Proxy: http.ProxyFromEnvironment, MaxIdleConnsPerHost: 16, IdleConnTimeout: 90 * time.Second, ForceAttemptHTTP2: true},
	}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("opensearch: reading CA file: %w", err)
		}
		oc.CACert = pem
	}
	var sg signer.Signer
	if cfg.AWSRegion != "" {
		awsCfg, err := awsconfig.LoadDefaultConfig(ctx, awsconfig.WithRegion(cfg.AWSRegion))
		if err != nil {
			return nil, fmt.Errorf("opensearch: loading AWS config: %w", err)
		}
		svc := cfg.AWSService
		if svc == "" {
			svc = "es"
		}
		sg, err = awsv2.NewSignerWithService(awsCfg, svc)
		if err != nil {
			return nil, fmt.Errorf("opensearch: building SigV4 signer: %w", err)
		}
		oc.Signer = sg
	}
	api, err := opensearchapi.NewClient(opensearchapi.Config{Client: oc})
	if err != nil {
		return nil, fmt.Errorf("opensearch: building client: %w", err)
	}
	tr := &http.Transport{Proxy: http.ProxyFromEnvironment}
	if oc.CACert != nil || cfg.Insecure {
		tlsCfg, err := tlsConfig(oc.CACert, cfg.Insecure)
		if err != nil {
			return nil, err
		}
		tr.TLSClientConfig = tlsCfg
	}
	return &Client{api: api, signer: sg, cfg: cfg, http: &http.Client{Transport: tr, Timeout: cfg.Timeout}}, nil
}

// Close releases idle connections and background work of the client.
func (c *Client) Close() error { return c.api.Client.Close() }

// BulkItem is one item of a bulk response. ID, Index and Result are read
// only from answers whose top-level "errors" is true (an answer without
// errors needs no more than the statuses).
type BulkItem struct {
	ID     string
	Index  string
	Status int
	Result string // "created", ...
	// ErrType and ErrReason are the item's error object; empty on success.
	ErrType   string
	ErrReason string
}

// BulkResponse is the parsed answer to one bulk request: the items in the
// order of the request.
type BulkResponse struct {
	Took   time.Duration
	Errors bool
	Items  []BulkItem
}

// StatusError is a bulk (or setup) request that OpenSearch answered with a
// non-2xx HTTP status as a whole.
type StatusError struct {
	Op     string
	Status int
	Type   string // error.type when present, e.g. "cluster_block_exception"
	Reason string
}

func (e *StatusError) Error() string {
	if e.Type != "" {
		return fmt.Sprintf("%s: HTTP %d %s: %s", e.Op, e.Status, e.Type, e.Reason)
	}
	return fmt.Sprintf("%s: HTTP %d", e.Op, e.Status)
}

// Bulk sends one NDJSON body (action and source lines, each ending with a
// newline) to POST /_bulk and returns the per-item results. It blocks until
// OpenSearch answers or ctx ends. A non-2xx answer to the whole request is a
// *StatusError; a transport failure or timeout is returned wrapped.
//
// The answer is decoded in one pass with github.com/tidwall/gjson, reading
// only each item's status when the top-level "errors" is false (every item
// succeeded), and the error fields of the items only when it is true.
func (c *Client) Bulk(ctx context.Context, body []byte) (BulkResponse, error) {
	hdr := http.Header{}
	hdr.Set("Content-Type", "application/x-ndjson")
	resp, err := c.api.Client.Do(ctx, http.MethodPost, opensearchapi.BulkReq{Body: bytes.NewReader(body), Header: hdr}, nil)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		return BulkResponse{}, asStatusError("bulk", status, err)
	}
	if resp.IsError() {
		return BulkResponse{}, asStatusError("bulk", resp.StatusCode, opensearchgo.ParseError(resp))
	}
	if resp.Body == nil {
		return BulkResponse{}, fmt.Errorf("bulk: HTTP %d without a body", resp.StatusCode)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return BulkResponse{}, fmt.Errorf("bulk: reading the answer: %w", err)
	}
	return parseBulkResponse(data)
}

// parseBulkResponse decodes a bulk answer: {"took", "errors", "items": [
// {"<op>": {"_index", "_id", "status", "result", "error": {"type",
// "reason", "caused_by": {"reason"}}}}, ...]}.
func parseBulkResponse(data []byte) (BulkResponse, error) {
	if !gjson.ValidBytes(data) {
		return BulkResponse{}, fmt.Errorf("bulk: answer is not JSON: %q", truncate(string(data), 256))
	}
	root := gjson.ParseBytes(data)
	var took, errs, items gjson.Result
	root.ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "took":
			took = v
		case "errors":
			errs = v
		case "items":
			items = v
		}
		return true
	})
	if !items.IsArray() {
		return BulkResponse{}, fmt.Errorf("bulk: answer without items: %q", truncate(string(data), 256))
	}
	out := BulkResponse{Took: time.Duration(took.Int()) * time.Millisecond, Errors: errs.Bool()}
	var bad error
	items.ForEach(func(_, m gjson.Result) bool {
		var it gjson.Result
		m.ForEach(func(_, v gjson.Result) bool { it = v; return false }) // one key: the op
		if !it.IsObject() {
			bad = fmt.Errorf("bulk: malformed item %q", truncate(m.Raw, 256))
			return false
		}
		bi := BulkItem{Status: int(it.Get("status").Int())}
		if out.Errors {
			bi.ID, bi.Index, bi.Result = it.Get("_id").String(), it.Get("_index").String(), it.Get("result").String()
			if e := it.Get("error"); e.Exists() {
				if e.IsObject() {
					bi.ErrType, bi.ErrReason = e.Get("type").String(), e.Get("reason").String()
					if bi.ErrReason == "" {
						bi.ErrReason = e.Get("caused_by.reason").String()
					}
				} else {
					bi.ErrType = "error"
					bi.ErrReason = e.String()
				}
			}
		}
		out.Items = append(out.Items, bi)
		return true
	})
	if bad != nil {
		return BulkResponse{}, bad
	}
	return out, nil
}

// asStatusError turns opensearch-go's error for an HTTP error answer into a
// *StatusError, leaving transport errors as they are.
// status is the HTTP status when a response arrived, else 0.
func asStatusError(op string, status int, err error) error {
	var se *opensearchgo.StructError
	if errors.As(err, &se) {
		return &StatusError{Op: op, Status: se.Status, Type: se.Err.Type, Reason: se.Err.Reason}
	}
	var st *opensearchgo.StringError
	if errors.As(err, &st) {
		return &StatusError{Op: op, Status: st.Status, Reason: truncate(strings.TrimSpace(st.Err), 512)}
	}
	if status != 0 {
		return &StatusError{Op: op, Status: status, Reason: truncate(err.Error(), 512)}
	}
	return fmt.Errorf("%s: %w", op, err)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// Search runs one search request (the heat map's aggregations). It blocks
// until OpenSearch answers or ctx ends. A non-2xx answer is a *StatusError.
func (c *Client) Search(ctx context.Context, req *opensearchapi.SearchReq) (*opensearchapi.SearchResp, error) {
	resp, err := c.api.Search(ctx, req)
	if err != nil {
		status := 0
		if resp != nil && resp.Inspect().Response != nil {
			status = resp.Inspect().Response.StatusCode
		}
		return nil, asStatusError("search", status, err)
	}
	return resp, nil
}
