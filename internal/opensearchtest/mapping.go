package opensearchtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// objectMapping is an object field's mapping: its dynamic setting and
// properties.
type objectMapping struct {
	Dynamic string // "true", "false", "strict"
	Props   map[string]*fieldMapping
}

// fieldMapping is either a leaf with a type or an object.
type fieldMapping struct {
	Type   string
	Object *objectMapping
}

var knownTypes = map[string]bool{
	"keyword": true, "text": true, "ip": true, "date": true, "date_nanos": true,
	"long": true, "integer": true, "short": true, "byte": true, "double": true,
	"float": true, "half_float": true, "scaled_float": true, "unsigned_long": true,
	"boolean": true, "geo_point": true, "geo_shape": true, "object": true, "nested": true,
	"flattened": true, "binary": true,
}

// parseObjectMapping parses a "mappings" (root) or object field body.
func parseObjectMapping(name string, b json.RawMessage, root bool) (*objectMapping, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("failed to parse mapping [%s]: %v", name, err)
	}
	om := &objectMapping{Dynamic: "true", Props: map[string]*fieldMapping{}}
	for k, v := range raw {
		switch k {
		case "dynamic":
			var d any
			_ = json.Unmarshal(v, &d)
			switch d := d.(type) {
			case bool:
				om.Dynamic = strconv.FormatBool(d)
			case string:
				if d != "true" && d != "false" && d != "strict" {
					return nil, fmt.Errorf("Could not convert [dynamic] to boolean") //nolint:staticcheck // OpenSearch's message
				}
				om.Dynamic = d
			default:
				return nil, fmt.Errorf("Could not convert [dynamic] to boolean") //nolint:staticcheck // OpenSearch's message
			}
		case "properties":
			var props map[string]json.RawMessage
			if err := json.Unmarshal(v, &props); err != nil {
				return nil, fmt.Errorf("Expected map for property [properties] on field [%s]", name) //nolint:staticcheck // OpenSearch's message
			}
			for pn, pb := range props {
				full := pn
				if name != "" {
					full = name + "." + pn
				}
				fm, err := parseField(full, pb)
				if err != nil {
					return nil, err
				}
				om.Props[pn] = fm
			}
		case "type":
			if root {
				return nil, fmt.Errorf("Root mapping definition has unsupported parameters:  [type : %s]", v) //nolint:staticcheck // OpenSearch's message
			}
		case "_source", "_routing", "_meta", "date_detection", "numeric_detection", "dynamic_templates", "enabled":
		default:
			if root {
				return nil, fmt.Errorf("Root mapping definition has unsupported parameters:  [%s : %s]", k, v) //nolint:staticcheck // OpenSearch's message
			}
		}
	}
	return om, nil
}

func parseField(name string, b json.RawMessage) (*fieldMapping, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("Expected map for property [fields] on field [%s] but got a %s", name, b) //nolint:staticcheck // OpenSearch's message
	}
	typ := "object"
	if t, ok := raw["type"]; ok {
		if err := json.Unmarshal(t, &typ); err != nil {
			return nil, fmt.Errorf("No type specified for field [%s]", name) //nolint:staticcheck // OpenSearch's message
		}
	}
	if !knownTypes[typ] {
		return nil, fmt.Errorf("No handler for type [%s] declared on field [%s]", typ, name) //nolint:staticcheck // OpenSearch's message
	}
	if typ == "object" || typ == "nested" {
		om, err := parseObjectMapping(name, b, false)
		if err != nil {
			return nil, err
		}
		return &fieldMapping{Type: typ, Object: om}, nil
	}
	if _, ok := raw["properties"]; ok {
		return nil, fmt.Errorf("Mapping definition for [%s] has unsupported parameters:  [properties]", name) //nolint:staticcheck // OpenSearch's message
	}
	return &fieldMapping{Type: typ}, nil
}

// docError is a per-item 400.
type docError struct{ typ, reason string }

// validateDoc checks a source against the mapping as OpenSearch's document
// parser would.
func validateDoc(m *objectMapping, id string, src []byte) *docError {
	dec := json.NewDecoder(bytes.NewReader(src))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return &docError{"mapper_parsing_exception", "failed to parse: " + err.Error()}
	}
	if dec.More() {
		return &docError{"mapper_parsing_exception", "failed to parse: trailing tokens"}
	}
	obj, ok := doc.(map[string]any)
	if !ok {
		return &docError{"mapper_parsing_exception", "failed to parse, document is empty or not an object"}
	}
	if m == nil {
		return nil
	}
	return validateObject(m, "", id, obj)
}

func validateObject(m *objectMapping, prefix, id string, obj map[string]any) *docError {
	for k, v := range obj {
		if k == "" {
			return &docError{"mapper_parsing_exception", "field name cannot be an empty string"}
		}
		// dotted field names are objects
		if i := strings.IndexByte(k, '.'); i > 0 {
			if err := validateObject(m, prefix, id, map[string]any{k[:i]: map[string]any{k[i+1:]: v}}); err != nil {
				return err
			}
			continue
		}
		full := k
		if prefix != "" {
			full = prefix + "." + k
		}
		fm, ok := m.Props[k]
		if !ok {
			if m.Dynamic == "strict" {
				parent := prefix
				if parent == "" {
					parent = "_doc"
				}
				return &docError{"strict_dynamic_mapping_exception", fmt.Sprintf("mapping set to strict, dynamic introduction of [%s] within [%s] is not allowed", k, parent)}
			}
			continue
		}
		if err := validateValue(fm, full, id, v); err != nil {
			return err
		}
	}
	return nil
}

func validateValue(fm *fieldMapping, full, id string, v any) *docError {
	if v == nil {
		return nil
	}
	if arr, ok := v.([]any); ok && fm.Type != "geo_point" {
		for _, e := range arr {
			if err := validateValue(fm, full, id, e); err != nil {
				return err
			}
		}
		return nil
	}
	fail := func() *docError {
		b, _ := json.Marshal(v)
		return &docError{"mapper_parsing_exception", fmt.Sprintf("failed to parse field [%s] of type [%s] in document with id '%s'. Preview of field's value: '%s'", full, fm.Type, id, b)}
	}
	if fm.Object != nil {
		o, ok := v.(map[string]any)
		if !ok {
			b, _ := json.Marshal(v)
			return &docError{"mapper_parsing_exception", fmt.Sprintf("object mapping for [%s] tried to parse field [%s] as object, but found a concrete value: '%s'", full, full, b)}
		}
		return validateObject(fm.Object, full, id, o)
	}
	switch fm.Type {
	case "keyword", "text":
		switch v.(type) {
		case string, json.Number, bool:
		default:
			return fail()
		}
	case "ip":
		s, ok := v.(string)
		if !ok {
			return fail()
		}
		if _, err := netip.ParseAddr(s); err != nil {
			return &docError{"mapper_parsing_exception", fmt.Sprintf("failed to parse field [%s] of type [ip] in document with id '%s'. Preview of field's value: '%s'", full, id, s)}
		}
	case "date", "date_nanos":
		switch x := v.(type) {
		case string:
			if !parseDate(x) {
				return fail()
			}
		case json.Number:
			if _, err := x.Int64(); err != nil {
				return fail()
			}
		default:
			return fail()
		}
	case "long", "integer", "short", "byte", "unsigned_long":
		n, ok := v.(json.Number)
		if !ok {
			if s, isStr := v.(string); isStr {
				n = json.Number(s)
			} else {
				return fail()
			}
		}
		f, err := strconv.ParseFloat(string(n), 64)
		if err != nil || f != math.Trunc(f) {
			// OpenSearch truncates fractions of coerced numbers; a
			// non-number is an error.
			if err != nil {
				return fail()
			}
		}
		lim := map[string]float64{"long": math.MaxInt64, "integer": math.MaxInt32, "short": math.MaxInt16, "byte": math.MaxInt8, "unsigned_long": math.MaxUint64}[fm.Type]
		lo := -lim - 1
		if fm.Type == "unsigned_long" {
			lo = 0
		}
		if f > lim || f < lo {
			return fail()
		}
	case "double", "float", "half_float", "scaled_float":
		switch x := v.(type) {
		case json.Number:
		case string:
			if _, err := strconv.ParseFloat(x, 64); err != nil {
				return fail()
			}
		default:
			return fail()
		}
	case "boolean":
		switch x := v.(type) {
		case bool:
		case string:
			if x != "true" && x != "false" && x != "" {
				return fail()
			}
		default:
			return fail()
		}
	case "geo_point":
		if !validGeoPoint(v) {
			return &docError{"mapper_parsing_exception", fmt.Sprintf("failed to parse field [%s] of type [geo_point]", full)}
		}
	}
	return nil
}

func parseDate(s string) bool {
	// strict_date_optional_time||epoch_millis, the default date format
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999", "2006-01-02T15:04", "2006-01-02"} {
		if _, err := time.Parse(layout, s); err == nil {
			return true
		}
	}
	if _, err := strconv.ParseInt(s, 10, 64); err == nil {
		return true
	}
	return false
}

func validGeoPoint(v any) bool {
	num := func(x any) (float64, bool) {
		switch n := x.(type) {
		case json.Number:
			f, err := n.Float64()
			return f, err == nil
		case string:
			f, err := strconv.ParseFloat(n, 64)
			return f, err == nil
		}
		return 0, false
	}
	inRange := func(lat, lon float64) bool { return lat >= -90 && lat <= 90 && lon >= -180 && lon <= 180 }
	switch p := v.(type) {
	case map[string]any:
		lat, ok1 := num(p["lat"])
		lon, ok2 := num(p["lon"])
		if !ok1 || !ok2 {
			return false
		}
		for k := range p {
			if k != "lat" && k != "lon" {
				return false
			}
		}
		return inRange(lat, lon)
	case string:
		parts := strings.Split(p, ",")
		if len(parts) != 2 {
			return len(p) > 0 && len(p) <= 12 // a geohash
		}
		lat, ok1 := num(strings.TrimSpace(parts[0]))
		lon, ok2 := num(strings.TrimSpace(parts[1]))
		return ok1 && ok2 && inRange(lat, lon)
	case []any:
		if len(p) < 2 || len(p) > 3 {
			return false
		}
		lon, ok1 := num(p[0])
		lat, ok2 := num(p[1])
		return ok1 && ok2 && inRange(lat, lon)
	}
	return false
}
