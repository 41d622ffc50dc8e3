package dashboards_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/originlens/originlens/deploy/dashboards"
	opensearchassets "github.com/originlens/originlens/deploy/opensearch"
)

// templateFields flattens the index template's mapping into field -> type.
func templateFields(t *testing.T) map[string]string {
	t.Helper()
	var tpl struct {
		Template struct {
			Mappings struct {
				Properties map[string]json.RawMessage `json:"properties"`
			} `json:"mappings"`
		} `json:"template"`
	}
	if err := json.Unmarshal(opensearchassets.IndexTemplate, &tpl); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	var walk func(prefix string, props map[string]json.RawMessage)
	walk = func(prefix string, props map[string]json.RawMessage) {
		for name, raw := range props {
			var f struct {
				Type       string                     `json:"type"`
				Properties map[string]json.RawMessage `json:"properties"`
			}
			if err := json.Unmarshal(raw, &f); err != nil {
				t.Fatal(err)
			}
			if f.Properties != nil {
				walk(prefix+name+".", f.Properties)
				continue
			}
			out[prefix+name] = f.Type
		}
	}
	walk("", tpl.Template.Mappings.Properties)
	return out
}

type savedObject struct {
	Type       string `json:"type"`
	ID         string `json:"id"`
	References []struct {
		Name, Type, ID string
	} `json:"references"`
	Attributes map[string]any `json:"attributes"`
}

type visState struct {
	Type   string         `json:"type"`
	Params map[string]any `json:"params"`
	Aggs   []struct {
		Type   string         `json:"type"`
		Schema string         `json:"schema"`
		Params map[string]any `json:"params"`
	} `json:"aggs"`
}

func TestDashboardsNDJSON(t *testing.T) {
	fields := templateFields(t)
	files := dashboards.Files()
	if len(files) == 0 {
		t.Fatal("no NDJSON files embedded")
	}
	objs := map[string]savedObject{}
	var visIDs []string
	for _, f := range files {
		if !strings.HasSuffix(f.Name, ".ndjson") {
			t.Errorf("%s: Dashboards' import requires the .ndjson extension", f.Name)
		}
		for i, line := range bytes.Split(bytes.TrimRight(f.Data, "\n"), []byte("\n")) {
			var o savedObject
			dec := json.NewDecoder(bytes.NewReader(line))
			if err := dec.Decode(&o); err != nil {
				t.Fatalf("%s:%d: %v", f.Name, i+1, err)
			}
			if o.Type == "" || o.ID == "" || o.Attributes == nil {
				t.Errorf("%s:%d: saved object without type, id or attributes", f.Name, i+1)
			}
			objs[o.Type+"/"+o.ID] = o
			if o.Type == "visualization" {
				visIDs = append(visIDs, o.ID)
			}
		}
	}
	ip, ok := objs["index-pattern/conn-events"]
	if !ok {
		t.Fatal("no index-pattern conn-events")
	}
	if tf := ip.Attributes["timeFieldName"]; fields[tf.(string)] != "date" {
		t.Errorf("index pattern time field %v is not a date in the template", tf)
	}

	wantAggField := map[string][]string{ // agg type -> allowed mapping types
		"geohash_grid":   {"geo_point"},
		"geotile_grid":   {"geo_point"},
		"terms":          {"keyword", "ip", "long", "integer"},
		"date_histogram": {"date"},
		"cardinality":    {"keyword", "ip", "long", "integer"},
	}
	heatmaps := 0
	groupedBy := map[string]bool{}
	filteredBy := map[string]bool{} // fields of the dashboard's filter controls
	for _, id := range visIDs {
		o := objs["visualization/"+id]
		for _, r := range o.References {
			if _, ok := objs[r.Type+"/"+r.ID]; !ok {
				t.Errorf("%s: reference %s/%s is not in the NDJSON", id, r.Type, r.ID)
			}
		}
		var vs visState
		if err := json.Unmarshal([]byte(o.Attributes["visState"].(string)), &vs); err != nil {
			t.Fatalf("%s: visState: %v", id, err)
		}
		var ss map[string]any
		if err := json.Unmarshal([]byte(o.Attributes["kibanaSavedObjectMeta"].(map[string]any)["searchSourceJSON"].(string)), &ss); err != nil {
			t.Fatalf("%s: searchSourceJSON: %v", id, err)
		}
		for _, a := range vs.Aggs {
			f, ok := a.Params["field"].(string)
			if !ok {
				continue
			}
			typ, mapped := fields[f]
			if !mapped {
				t.Errorf("%s: %s aggregation on %q, which the index template does not define", id, a.Type, f)
				continue
			}
			if allowed, ok := wantAggField[a.Type]; ok && !contains(allowed, typ) {
				t.Errorf("%s: %s aggregation on %s of type %s, want one of %v", id, a.Type, f, typ, allowed)
			}
			groupedBy[f] = true
		}
		if vs.Type == "input_control_vis" {
			controls, _ := vs.Params["controls"].([]any)
			for _, c := range controls {
				f, _ := c.(map[string]any)["fieldName"].(string)
				if _, mapped := fields[f]; !mapped {
					t.Errorf("%s: control on %q, which the index template does not define", id, f)
				}
				filteredBy[f] = true
			}
		}
		if vs.Type == "tile_map" {
			if vs.Params["mapType"] != "Heatmap" {
				t.Errorf("%s: tile_map mapType = %v, want Heatmap", id, vs.Params["mapType"])
			}
			for _, a := range vs.Aggs {
				if a.Type == "geohash_grid" && a.Params["field"] == "source.geo.location" && fields["source.geo.location"] == "geo_point" {
					heatmaps++
				}
			}
		}
	}
	if heatmaps == 0 {
		t.Error("no coordinate-map heat map with a geohash_grid on the geo_point source.geo.location")
	}
	for _, f := range []string{"source.geo.country_iso_code", "residency.decision", "@timestamp", "source.as.number", "network.transport"} {
		if !groupedBy[f] {
			t.Errorf("no visualization aggregates on %s", f)
		}
	}
	if !filteredBy["network.transport"] {
		t.Error("no filter control on network.transport: the dashboard cannot show UDP or TCP alone")
	}

	dash, ok := objs["dashboard/originlens-connections"]
	if !ok {
		t.Fatal("no dashboard originlens-connections")
	}
	var panels []struct {
		PanelRefName string `json:"panelRefName"`
	}
	if err := json.Unmarshal([]byte(dash.Attributes["panelsJSON"].(string)), &panels); err != nil {
		t.Fatal(err)
	}
	refs := map[string]string{}
	for _, r := range dash.References {
		refs[r.Name] = r.ID
		if _, ok := objs[r.Type+"/"+r.ID]; !ok {
			t.Errorf("dashboard references missing %s/%s", r.Type, r.ID)
		}
	}
	shown := map[string]bool{}
	for _, p := range panels {
		id, ok := refs[p.PanelRefName]
		if !ok {
			t.Errorf("panel %s has no reference", p.PanelRefName)
		}
		shown[id] = true
	}
	for _, id := range visIDs {
		if !shown[id] {
			t.Errorf("visualization %s is not on the dashboard", id)
		}
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
