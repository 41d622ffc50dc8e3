package opensearch

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	opensearchgo "github.com/opensearch-project/opensearch-go/v4"
)

// SetupConfig names what Setup installs.
type SetupConfig struct {
	IndexPrefix  string // e.g. "conn-events-"; indices are prefix + "YYYY.MM.DD"
	TemplateName string // _index_template name
	PolicyID     string // ISM policy id
	Retention    string // ISM min_index_age, e.g. "30d"
	Template     []byte // the template body (deploy/opensearch)
	Policy       []byte // the ISM policy body (deploy/opensearch)
}

var retentionRE = regexp.MustCompile(`^[1-9][0-9]*(d|h|m|s)$`)

// ValidRetention reports whether r is an OpenSearch time value that ISM's
// min_index_age accepts and this service allows: a positive integer with d,
// h, m or s.
func ValidRetention(r string) bool { return retentionRE.MatchString(r) }

// Setup installs the index template and the ISM policy. It is idempotent:
// the template is overwritten, the policy is created or updated in place
// (with if_seq_no/if_primary_term). It blocks until both are done.
//
// An updated policy applies to indices created afterwards; indices that ISM
// already manages keep the policy version they started with.
func (c *Client) Setup(ctx context.Context, sc SetupConfig) error {
	tpl, err := RenderTemplate(sc.Template, sc.IndexPrefix)
	if err != nil {
		return err
	}
	if err := c.putTemplate(ctx, sc.TemplateName, tpl); err != nil {
		return err
	}
	pol, err := RenderPolicy(sc.Policy, sc.IndexPrefix, sc.Retention)
	if err != nil {
		return err
	}
	return c.putPolicy(ctx, sc.PolicyID, pol)
}

// RenderTemplate returns the template with its index_patterns set to
// prefix + "*".
func RenderTemplate(tpl []byte, prefix string) ([]byte, error) {
	var m map[string]any
	if err := json.Unmarshal(tpl, &m); err != nil {
		return nil, fmt.Errorf("opensearch: parsing index template: %w", err)
	}
	m["index_patterns"] = []string{prefix + "*"}
	return json.Marshal(m)
}

// RenderPolicy returns the ISM policy with its ism_template index_patterns
// set to prefix + "*" and every min_index_age condition set to retention.
func RenderPolicy(pol []byte, prefix, retention string) ([]byte, error) {
	if !ValidRetention(retention) {
		return nil, fmt.Errorf("opensearch: retention %q: want a positive number with d, h, m or s, e.g. 30d", retention)
	}
	var doc struct {
		Policy map[string]any `json:"policy"`
	}
	if err := json.Unmarshal(pol, &doc); err != nil || doc.Policy == nil {
		return nil, fmt.Errorf("opensearch: parsing ISM policy: %w", errors.Join(err, errors.New("no policy object")))
	}
	states, _ := doc.Policy["states"].([]any)
	set := 0
	for _, s := range states {
		st, _ := s.(map[string]any)
		trs, _ := st["transitions"].([]any)
		for _, t := range trs {
			tr, _ := t.(map[string]any)
			if cond, ok := tr["conditions"].(map[string]any); ok {
				if _, ok := cond["min_index_age"]; ok {
					cond["min_index_age"] = retention
					set++
				}
			}
		}
	}
	if set == 0 {
		return nil, errors.New("opensearch: ISM policy has no min_index_age transition to set the retention on")
	}
	tmpls, _ := doc.Policy["ism_template"].([]any)
	if len(tmpls) == 0 {
		return nil, errors.New("opensearch: ISM policy has no ism_template: it would attach to no index")
	}
	for _, t := range tmpls {
		if tm, ok := t.(map[string]any); ok {
			tm["index_patterns"] = []string{prefix + "*"}
		}
	}
	return json.Marshal(doc)
}

func (c *Client) putTemplate(ctx context.Context, name string, body []byte) error {
	status, resp, err := c.call(ctx, http.MethodPut, "/_index_template/"+url.PathEscape(name), nil, body)
	if err != nil {
		return fmt.Errorf("putting index template %s: %w", name, err)
	}
	if status/100 != 2 {
		return fmt.Errorf("putting index template %s: %w", name, responseError("put index template", status, resp))
	}
	return nil
}

func (c *Client) putPolicy(ctx context.Context, id string, body []byte) error {
	path := "/_plugins/_ism/policies/" + url.PathEscape(id)
	for attempt := 0; attempt < 3; attempt++ {
		status, resp, err := c.call(ctx, http.MethodGet, path, nil, nil)
		if err != nil {
			return fmt.Errorf("getting ISM policy %s: %w", id, err)
		}
		var q url.Values
		switch {
		case status == http.StatusNotFound:
			// create
		case status/100 == 2:
			var cur struct {
				SeqNo       *int64 `json:"_seq_no"`
				PrimaryTerm *int64 `json:"_primary_term"`
			}
			if err := json.Unmarshal(resp, &cur); err != nil || cur.SeqNo == nil || cur.PrimaryTerm == nil {
				return fmt.Errorf("getting ISM policy %s: no _seq_no/_primary_term in %q", id, truncate(string(resp), 256))
			}
			q = url.Values{"if_seq_no": {strconv.FormatInt(*cur.SeqNo, 10)}, "if_primary_term": {strconv.FormatInt(*cur.PrimaryTerm, 10)}}
		default:
			return fmt.Errorf("getting ISM policy %s: %w", id, responseError("get ISM policy", status, resp))
		}
		status, resp, err = c.call(ctx, http.MethodPut, path, q, body)
		if err != nil {
			return fmt.Errorf("putting ISM policy %s: %w", id, err)
		}
		if status == http.StatusConflict {
			continue // another instance created or updated it meanwhile: re-read
		}
		if status/100 != 2 {
			return fmt.Errorf("putting ISM policy %s: %w", id, responseError("put ISM policy", status, resp))
		}
		return nil
	}
	return fmt.Errorf("putting ISM policy %s: still conflicting after 3 attempts", id)
}

// responseError builds a *StatusError from an error answer's body.
func responseError(op string, status int, body []byte) error {
	se := &StatusError{Op: op, Status: status}
	var e struct {
		Error json.RawMessage `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && len(e.Error) > 0 {
		var obj struct {
			Type   string `json:"type"`
			Reason string `json:"reason"`
		}
		if json.Unmarshal(e.Error, &obj) == nil {
			se.Type, se.Reason = obj.Type, obj.Reason
		} else {
			var s string
			_ = json.Unmarshal(e.Error, &s)
			se.Reason = s
		}
	}
	if se.Reason == "" {
		se.Reason = truncate(string(body), 256)
	}
	return se
}

// rawReq is an opensearch-go request for an API the typed client does not
// cover the way setup needs it.
type rawReq struct {
	path  string
	query url.Values
	body  []byte
}

func (r rawReq) GetRequest(method string) (*http.Request, error) {
	var body io.Reader
	if r.body != nil {
		body = bytes.NewReader(r.body)
	}
	u := r.path
	if len(r.query) > 0 {
		u += "?" + r.query.Encode()
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		return nil, err
	}
	if r.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return req, nil
}

// call performs one request through the opensearch-go transport (auth,
// SigV4) and returns the status and body.
func (c *Client) call(ctx context.Context, method, path string, q url.Values, body []byte) (int, []byte, error) {
	var raw json.RawMessage
	resp, err := opensearchgo.Do(ctx, c.api.Client, method, rawReq{path: path, query: q, body: body}, &raw)
	if resp == nil {
		return 0, nil, err
	}
	if err != nil {
		return resp.StatusCode, nil, err
	}
	if resp.IsError() {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return resp.StatusCode, b, nil
	}
	return resp.StatusCode, raw, nil
}

// DashboardsFile is one NDJSON file of saved objects.
type DashboardsFile struct {
	Name string // ends with .ndjson
	Data []byte
}

// ImportDashboards imports saved objects into OpenSearch Dashboards at
// base (e.g. http://localhost:5601, or https://domain/_dashboards on Amazon
// OpenSearch Service) with POST /api/saved_objects/_import?overwrite=true.
// Index patterns titled "conn-events-*" are retitled prefix + "*". It uses
// the cluster's credentials (basic auth or SigV4) and blocks until every
// file is imported; an import with errors is an error.
func (c *Client) ImportDashboards(ctx context.Context, base, prefix string, files []DashboardsFile) error {
	for _, f := range files {
		data, err := RetitleIndexPattern(f.Data, prefix)
		if err != nil {
			return fmt.Errorf("importing %s: %w", f.Name, err)
		}
		if err := c.importFile(ctx, base, f.Name, data); err != nil {
			return fmt.Errorf("importing %s: %w", f.Name, err)
		}
	}
	return nil
}

// RetitleIndexPattern rewrites the title of index-pattern objects from
// "conn-events-*" to prefix + "*".
func RetitleIndexPattern(ndjson []byte, prefix string) ([]byte, error) {
	if prefix+"*" == "conn-events-*" {
		return ndjson, nil
	}
	var out bytes.Buffer
	for i, line := range bytes.Split(ndjson, []byte("\n")) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var obj map[string]any
		if err := json.Unmarshal(line, &obj); err != nil {
			return nil, fmt.Errorf("line %d: %w", i+1, err)
		}
		if obj["type"] == "index-pattern" {
			if attrs, ok := obj["attributes"].(map[string]any); ok && attrs["title"] == "conn-events-*" {
				attrs["title"] = prefix + "*"
				b, err := json.Marshal(obj)
				if err != nil {
					return nil, err
				}
				line = b
			}
		}
		out.Write(line)
		out.WriteByte('\n')
	}
	return out.Bytes(), nil
}

func (c *Client) importFile(ctx context.Context, base, name string, data []byte) error {
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	fw, err := mw.CreateFormFile("file", name)
	if err != nil {
		return err
	}
	if _, err := fw.Write(data); err != nil {
		return err
	}
	if err := mw.Close(); err != nil {
		return err
	}
	u := strings.TrimRight(base, "/") + "/api/saved_objects/_import?overwrite=true"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body.Bytes()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.Header.Set("osd-xsrf", "true")
	if c.cfg.Username != "" {
		req.SetBasicAuth(c.cfg.Username, c.cfg.Password)
	}
	if c.signer != nil {
		if err := c.signer.SignRequest(req); err != nil {
			return fmt.Errorf("signing: %w", err)
		}
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("reading answer: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("HTTP %d: %s", resp.StatusCode, truncate(string(rb), 512))
	}
	var ir struct {
		Success      bool              `json:"success"`
		SuccessCount int               `json:"successCount"`
		Errors       []json.RawMessage `json:"errors"`
	}
	if err := json.Unmarshal(rb, &ir); err != nil {
		return fmt.Errorf("parsing answer %q: %w", truncate(string(rb), 256), err)
	}
	if !ir.Success || len(ir.Errors) > 0 {
		return fmt.Errorf("imported %d objects with %d errors: %s", ir.SuccessCount, len(ir.Errors), truncate(string(rb), 1024))
	}
	return nil
}

// RefreshAndCount refreshes the indices matching pattern and returns their
// document count. It is for tests and operators' checks.
func (c *Client) RefreshAndCount(ctx context.Context, pattern string) (int, error) {
	p := "/" + url.PathEscape(pattern)
	if status, resp, err := c.call(ctx, http.MethodPost, p+"/_refresh", nil, nil); err != nil || status/100 != 2 {
		return 0, fmt.Errorf("refreshing %s: %w", pattern, errors.Join(err, responseErrorIf(status, resp)))
	}
	status, resp, err := c.call(ctx, http.MethodGet, p+"/_count", nil, nil)
	if err != nil || status/100 != 2 {
		return 0, fmt.Errorf("counting %s: %w", pattern, errors.Join(err, responseErrorIf(status, resp)))
	}
	var cr struct {
		Count int `json:"count"`
	}
	if err := json.Unmarshal(resp, &cr); err != nil {
		return 0, fmt.Errorf("counting %s: %w", pattern, err)
	}
	return cr.Count, nil
}

// Teardown deletes what Setup installed and the indices of the prefix. It
// is for tests against real clusters.
func (c *Client) Teardown(ctx context.Context, sc SetupConfig) error {
	var errs []error
	for _, p := range []string{"/" + url.PathEscape(sc.IndexPrefix+"*"), "/_index_template/" + url.PathEscape(sc.TemplateName), "/_plugins/_ism/policies/" + url.PathEscape(sc.PolicyID)} {
		status, resp, err := c.call(ctx, http.MethodDelete, p, nil, nil)
		if err != nil || (status/100 != 2 && status != http.StatusNotFound) {
			errs = append(errs, fmt.Errorf("deleting %s: %w", p, errors.Join(err, responseErrorIf(status, resp))))
		}
	}
	return errors.Join(errs...)
}

func responseErrorIf(status int, body []byte) error {
	if status == 0 || status/100 == 2 {
		return nil
	}
	return responseError("request", status, body)
}
