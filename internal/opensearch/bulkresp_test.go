package opensearch

import (
	"encoding/json"
	"testing"
)

func TestParseBulkResponse(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []BulkItem
		wantErr bool
	}{
		{"no_errors", `{"took":3,"errors":false,"items":[{"create":{"_index":"i","_id":"a","status":201,"result":"created"}},{"create":{"_index":"i","_id":"b","status":201}}]}`,
			[]BulkItem{{Status: 201}, {Status: 201}}, false},
		{"errors", `{"took":3,"errors":true,"items":[{"create":{"_index":"i","_id":"a","status":201,"result":"created"}},` +
			`{"create":{"_index":"i","_id":"b","status":409,"error":{"type":"version_conflict_engine_exception","reason":"exists"}}},` +
			`{"create":{"_index":"i","_id":"c","status":400,"error":{"type":"mapper_parsing_exception","caused_by":{"reason":"bad lat"}}}}]}`,
			[]BulkItem{{ID: "a", Index: "i", Status: 201, Result: "created"},
				{ID: "b", Index: "i", Status: 409, ErrType: "version_conflict_engine_exception", ErrReason: "exists"},
				{ID: "c", Index: "i", Status: 400, ErrType: "mapper_parsing_exception", ErrReason: "bad lat"}}, false},
		{"empty_items", `{"took":0,"errors":false,"items":[]}`, nil, false},
		{"not_json", `<html>bad gateway</html>`, nil, true},
		{"no_items", `{"took":1,"errors":false}`, nil, true},
		{"bad_item", `{"took":1,"errors":false,"items":[5]}`, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseBulkResponse([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseBulkResponse(%s) error = %v, want error %v", tt.in, err, tt.wantErr)
			}
			if len(got.Items) != len(tt.want) {
				t.Fatalf("parseBulkResponse(%s) = %d items, want %d", tt.in, len(got.Items), len(tt.want))
			}
			for i := range tt.want {
				if got.Items[i] != tt.want[i] {
					t.Errorf("item %d = %+v, want %+v", i, got.Items[i], tt.want[i])
				}
			}
		})
	}
}

// FuzzParseBulkResponse: whatever the cluster answers, the decode does not
// panic, accepts only JSON, and returns one item per element of "items".
func FuzzParseBulkResponse(f *testing.F) {
	f.Add([]byte(`{"took":3,"errors":true,"items":[{"create":{"_index":"i","_id":"b","status":409,"error":{"type":"x","reason":"y"}}}]}`))
	f.Add([]byte(`{"took":3,"errors":false,"items":[{"index":{"status":201}}]}`))
	f.Add([]byte(`{"items":[{}]}`))
	f.Add([]byte(`not json`))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := parseBulkResponse(b)
		if err != nil {
			return
		}
		if !json.Valid(b) {
			t.Fatalf("accepted invalid JSON %q", b)
		}
		var doc map[string]json.RawMessage // exact keys, the last duplicate wins
		var items []json.RawMessage
		if json.Unmarshal(b, &doc) == nil && json.Unmarshal(doc["items"], &items) == nil && len(items) != len(got.Items) {
			t.Fatalf("parseBulkResponse(%q) = %d items, JSON has %d", b, len(got.Items), len(items))
		}
	})
}
