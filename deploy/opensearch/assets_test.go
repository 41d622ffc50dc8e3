package opensearchassets_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	opensearchassets "github.com/originlens/originlens/deploy/opensearch"
	"github.com/originlens/originlens/internal/event"
	"github.com/originlens/originlens/internal/opensearchtest"
)

// TestTemplateCoversEvent checks that every field of a fully populated
// event is mapped (the template is dynamic: strict) and that the fields the
// heat map and the IP filters need have the right types.
func TestTemplateCoversEvent(t *testing.T) {
	var tpl struct {
		Template struct {
			Mappings struct {
				Dynamic    string                     `json:"dynamic"`
				Properties map[string]json.RawMessage `json:"properties"`
			} `json:"mappings"`
		} `json:"template"`
	}
	if err := json.Unmarshal(opensearchassets.IndexTemplate, &tpl); err != nil {
		t.Fatal(err)
	}
	if tpl.Template.Mappings.Dynamic != "strict" {
		t.Errorf("dynamic = %q, want strict", tpl.Template.Mappings.Dynamic)
	}
	types := map[string]string{}
	var walk func(string, map[string]json.RawMessage)
	walk = func(prefix string, props map[string]json.RawMessage) {
		for n, raw := range props {
			var f struct {
				Type       string                     `json:"type"`
				Properties map[string]json.RawMessage `json:"properties"`
			}
			_ = json.Unmarshal(raw, &f)
			if f.Properties != nil {
				walk(prefix+n+".", f.Properties)
			} else {
				types[prefix+n] = f.Type
			}
		}
	}
	walk("", tpl.Template.Mappings.Properties)

	for _, ev := range []event.Event{
		opensearchtest.SampleEvent(1, time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)),
		opensearchtest.SampleUDPEvent(1, time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)),
	} {
		checkMapped(t, types, ev)
	}
	want := map[string]string{
		"@timestamp": "date", "source.ip": "ip", "destination.ip": "ip", "clientip.peer.ip": "ip",
		"source.geo.location": "geo_point", "source.geo.country_iso_code": "keyword", "residency.decision": "keyword",
		"event.duration": "long", "event.id": "keyword", "network.transport": "keyword",
		"source.packets": "long", "destination.packets": "long", "flow.first_seen": "date", "flow.last_seen": "date",
	}
	for f, typ := range want {
		if types[f] != typ {
			t.Errorf("%s mapped as %q, want %q", f, types[f], typ)
		}
	}
}

// checkMapped fails on a field of ev that the template does not map.
func checkMapped(t *testing.T, types map[string]string, ev event.Event) {
	t.Helper()
	b, _ := ev.Marshal()
	var doc map[string]any
	_ = json.Unmarshal(b, &doc)
	var leaves func(string, any)
	seen := 0
	leaves = func(path string, v any) {
		if m, ok := v.(map[string]any); ok && types[path] != "geo_point" {
			for k, c := range m {
				p := k
				if path != "" {
					p = path + "." + k
				}
				leaves(p, c)
			}
			return
		}
		seen++
		if _, ok := types[path]; !ok {
			t.Errorf("event field %s is not in the index template", path)
		}
	}
	leaves("", doc)
	// The fields of a GeoIP lookup error and of dropped coordinates,
	// which a complete sample event does not have.
	ev.Source.Geo.Error, ev.Source.Geo.LocationInvalid, ev.Source.Geo.Location = "city record: bad", true, nil
	b, _ = ev.Marshal()
	doc = nil
	_ = json.Unmarshal(b, &doc)
	leaves("", doc)
	for _, f := range []string{"source.geo.error", "source.geo.location_invalid"} {
		if !bytes.Contains(b, []byte(`"`+f[strings.LastIndexByte(f, '.')+1:]+`":`)) {
			t.Errorf("the event does not carry %s: %s", f, b)
		}
	}
	if seen < 40 {
		t.Errorf("only %d event fields checked; the sample event should fill every group", seen)
	}
}
