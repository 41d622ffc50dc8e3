package cloudformation_test

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"go.yaml.in/yaml/v3"
)

// templateFiles are the templates of the stack, parent first.
var templateFiles = []string{"main.yaml", "network.yaml", "analytics.yaml", "app.yaml", "ingest.yaml"}

// tmpl is a template decoded into plain Go values (map[string]any, []any,
// string, int, float64, bool, nil) with every short-form intrinsic tag
// rewritten to its long form, so `!Ref X` reads {"Ref": "X"} and
// `!GetAtt A.B` reads {"Fn::GetAtt": ["A", "B"]}.
type tmpl struct {
	name string
	root map[string]any
}

func (t *tmpl) section(name string) map[string]any {
	m, _ := t.root[name].(map[string]any)
	return m
}

// resource returns the named resource; the test fails if it is missing.
func (t *tmpl) resource(tb testing.TB, name string) map[string]any {
	tb.Helper()
	r, ok := t.section("Resources")[name].(map[string]any)
	if !ok {
		tb.Fatalf("%s: no resource %s", t.name, name)
	}
	return r
}

// ofType returns the names of the resources of a type, sorted.
func (t *tmpl) ofType(typ string) []string {
	var names []string
	for name, r := range t.section("Resources") {
		if m, ok := r.(map[string]any); ok && m["Type"] == typ {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

func props(r map[string]any) map[string]any {
	p, _ := r["Properties"].(map[string]any)
	return p
}

// dig walks maps by key and lists by decimal index; nil when absent.
func dig(v any, path ...string) any {
	for _, k := range path {
		switch x := v.(type) {
		case map[string]any:
			v = x[k]
		case []any:
			i, err := strconv.Atoi(k)
			if err != nil || i < 0 || i >= len(x) {
				return nil
			}
			v = x[i]
		default:
			return nil
		}
	}
	return v
}

var (
	loadMu   sync.Mutex
	loaded   = map[string]*tmpl{}
	loadErrs = map[string]error{}
)

// load decodes a template of this directory once per test binary. The
// result is shared: callers must not modify it.
func load(tb testing.TB, name string) *tmpl {
	tb.Helper()
	loadMu.Lock()
	defer loadMu.Unlock()
	if t, ok := loaded[name]; ok {
		return t
	}
	if err, ok := loadErrs[name]; ok {
		tb.Fatal(err)
	}
	data, err := os.ReadFile(name)
	if err == nil {
		var v any
		v, err = decodeTemplate(data)
		if err == nil {
			root, ok := v.(map[string]any)
			if !ok {
				err = errors.New("not a mapping")
			}
			loaded[name] = &tmpl{name: name, root: root}
		}
	}
	if err != nil {
		loadErrs[name] = fmt.Errorf("%s: %w", name, err)
		tb.Fatal(loadErrs[name])
	}
	return loaded[name]
}

// decodeTemplate decodes CloudFormation YAML. Duplicate keys and unknown
// tags are errors, as they are for CloudFormation.
func decodeTemplate(data []byte) (any, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, err
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		return nil, errors.New("want exactly one YAML document")
	}
	return convert(doc.Content[0])
}

// intrinsics maps a short-form tag to its long-form key.
var intrinsics = map[string]string{
	"!Ref": "Ref", "!Condition": "Condition",
	"!Sub": "Fn::Sub", "!GetAtt": "Fn::GetAtt", "!If": "Fn::If", "!Equals": "Fn::Equals",
	"!Select": "Fn::Select", "!GetAZs": "Fn::GetAZs", "!Join": "Fn::Join", "!Split": "Fn::Split",
	"!FindInMap": "Fn::FindInMap", "!Base64": "Fn::Base64", "!Not": "Fn::Not", "!And": "Fn::And",
	"!Or": "Fn::Or", "!ImportValue": "Fn::ImportValue", "!Cidr": "Fn::Cidr",
}

func convert(n *yaml.Node) (any, error) {
	if n.Kind == yaml.AliasNode {
		// Refused rather than expanded: an alias can refer to its own
		// ancestor or multiply a document exponentially, and the
		// templates have no use for them.
		return nil, fmt.Errorf("line %d: YAML aliases are not supported", n.Line)
	}
	if strings.HasPrefix(n.Tag, "!") && !strings.HasPrefix(n.Tag, "!!") {
		key, ok := intrinsics[n.Tag]
		if !ok {
			return nil, fmt.Errorf("line %d: unknown tag %s", n.Line, n.Tag)
		}
		inner := *n
		inner.Tag = ""
		if n.Kind == yaml.ScalarNode {
			inner.Tag = "!!str"
		}
		v, err := convert(&inner)
		if err != nil {
			return nil, err
		}
		if key == "Fn::GetAtt" {
			if s, ok := v.(string); ok {
				res, attr, found := strings.Cut(s, ".")
				if !found {
					return nil, fmt.Errorf("line %d: !GetAtt %q needs Resource.Attribute", n.Line, s)
				}
				v = []any{res, attr}
			}
		}
		return map[string]any{key: v}, nil
	}
	switch n.Kind {
	case yaml.MappingNode:
		m := make(map[string]any, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			if k.Kind != yaml.ScalarNode {
				return nil, fmt.Errorf("line %d: non-scalar key", k.Line)
			}
			if _, dup := m[k.Value]; dup {
				return nil, fmt.Errorf("line %d: duplicate key %q", k.Line, k.Value)
			}
			v, err := convert(n.Content[i+1])
			if err != nil {
				return nil, err
			}
			m[k.Value] = v
		}
		return m, nil
	case yaml.SequenceNode:
		l := make([]any, 0, len(n.Content))
		for _, c := range n.Content {
			v, err := convert(c)
			if err != nil {
				return nil, err
			}
			l = append(l, v)
		}
		return l, nil
	case yaml.ScalarNode:
		var v any
		if err := n.Decode(&v); err != nil {
			return nil, fmt.Errorf("line %d: %w", n.Line, err)
		}
		return v, nil
	}
	return nil, fmt.Errorf("line %d: unexpected YAML node kind %v", n.Line, n.Kind)
}

// noValue is what AWS::NoValue evaluates to; lists and maps drop it.
type noValueT struct{}

var noValue = noValueT{}

// env evaluates intrinsic functions for one set of parameter values, the
// way CloudFormation would at deploy time, with placeholders where only a
// deployment can tell: Ref to a resource is "{{Ref Name}}", GetAtt is
// "{{GetAtt Name.Attr}}".
type env struct {
	t      *tmpl
	params map[string]any
	attrs  map[string]any // "Resource.Attribute" -> value, for GetAtt
}

// newEnv starts from the parameters' defaults, then applies overrides.
// Parameters with neither stay unresolved and evaluate to "{{Param Name}}".
func newEnv(t *tmpl, overrides map[string]string) *env {
	e := &env{t: t, params: map[string]any{}}
	for name, p := range t.section("Parameters") {
		if d, ok := dig(p, "Default").(string); ok {
			e.params[name] = d
		} else if d := dig(p, "Default"); d != nil {
			e.params[name] = fmt.Sprint(d)
		}
	}
	for k, v := range overrides {
		if _, ok := t.section("Parameters")[k]; !ok {
			panic(fmt.Sprintf("%s has no parameter %s", t.name, k))
		}
		e.params[k] = v
	}
	return e
}

var pseudo = map[string]string{
	"AWS::Region": "us-east-2", "AWS::AccountId": "123456789012", "AWS::Partition": "aws",
	"AWS::StackName": "originlens-test", "AWS::URLSuffix": "amazonaws.com",
	"AWS::StackId": "arn:aws:cloudformation:us-east-2:123456789012:stack/originlens-test/1",
}

func (e *env) ref(name string) (any, error) {
	if name == "AWS::NoValue" {
		return noValue, nil
	}
	if v, ok := pseudo[name]; ok {
		return v, nil
	}
	if p, ok := e.t.section("Parameters")[name]; ok {
		v, ok := e.params[name]
		if !ok {
			return "{{Param " + name + "}}", nil
		}
		if typ, _ := dig(p, "Type").(string); strings.HasPrefix(typ, "List<") || typ == "CommaDelimitedList" {
			if s, ok := v.(string); ok {
				return toAnyList(strings.Split(s, ",")), nil
			}
		}
		return v, nil
	}
	if _, ok := e.t.section("Resources")[name]; ok {
		return "{{Ref " + name + "}}", nil
	}
	return nil, fmt.Errorf("Ref to unknown %q", name)
}

func toAnyList(s []string) []any {
	l := make([]any, len(s))
	for i, x := range s {
		l[i] = x
	}
	return l
}

// cond evaluates a named condition.
func (e *env) cond(name string) (bool, error) {
	c, ok := e.t.section("Conditions")[name]
	if !ok {
		return false, fmt.Errorf("unknown condition %q", name)
	}
	v, err := e.eval(c)
	if err != nil {
		return false, fmt.Errorf("condition %s: %w", name, err)
	}
	b, ok := v.(bool)
	if !ok {
		return false, fmt.Errorf("condition %s is %T, not a boolean", name, v)
	}
	return b, nil
}

var subVar = regexp.MustCompile(`\$\{(!?)([^}]*)\}`)

// eval evaluates v; errors name the unsupported or malformed intrinsic.
func (e *env) eval(v any) (any, error) {
	switch x := v.(type) {
	case []any:
		out := make([]any, 0, len(x))
		for _, item := range x {
			r, err := e.eval(item)
			if err != nil {
				return nil, err
			}
			if r != noValue {
				out = append(out, r)
			}
		}
		return out, nil
	case map[string]any:
		if len(x) == 1 {
			for k, arg := range x {
				if k == "Ref" || k == "Condition" || strings.HasPrefix(k, "Fn::") {
					return e.intrinsic(k, arg)
				}
			}
		}
		out := make(map[string]any, len(x))
		for k, item := range x {
			r, err := e.eval(item)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", k, err)
			}
			if r != noValue {
				out[k] = r
			}
		}
		return out, nil
	}
	return v, nil
}

func (e *env) intrinsic(fn string, arg any) (any, error) {
	args, _ := arg.([]any)
	switch fn {
	case "Ref":
		s, _ := arg.(string)
		return e.ref(s)
	case "Condition":
		s, _ := arg.(string)
		return e.cond(s)
	case "Fn::If":
		if len(args) != 3 {
			return nil, fmt.Errorf("Fn::If wants 3 arguments, got %v", arg)
		}
		name, _ := args[0].(string)
		ok, err := e.cond(name)
		if err != nil {
			return nil, err
		}
		if ok {
			return e.eval(args[1])
		}
		return e.eval(args[2])
	case "Fn::Equals":
		vals, err := e.evalList(args, 2)
		if err != nil {
			return nil, err
		}
		return fmt.Sprint(vals[0]) == fmt.Sprint(vals[1]), nil
	case "Fn::Not":
		vals, err := e.evalList(args, 1)
		if err != nil {
			return nil, err
		}
		b, ok := vals[0].(bool)
		if !ok {
			return nil, fmt.Errorf("Fn::Not of %T", vals[0])
		}
		return !b, nil
	case "Fn::And", "Fn::Or":
		vals, err := e.evalList(args, -1)
		if err != nil {
			return nil, err
		}
		acc := fn == "Fn::And"
		for _, v := range vals {
			b, ok := v.(bool)
			if !ok {
				return nil, fmt.Errorf("%s of %T", fn, v)
			}
			if fn == "Fn::And" {
				acc = acc && b
			} else {
				acc = acc || b
			}
		}
		return acc, nil
	case "Fn::GetAtt":
		if len(args) != 2 {
			return nil, fmt.Errorf("Fn::GetAtt wants [Resource, Attribute], got %v", arg)
		}
		res, _ := args[0].(string)
		if _, ok := e.t.section("Resources")[res]; !ok {
			return nil, fmt.Errorf("GetAtt of unknown resource %q", res)
		}
		if v, ok := e.attrs[fmt.Sprintf("%s.%v", res, args[1])]; ok {
			return v, nil
		}
		return fmt.Sprintf("{{GetAtt %s.%v}}", res, args[1]), nil
	case "Fn::Sub":
		var format string
		vars := map[string]any{}
		switch a := arg.(type) {
		case string:
			format = a
		case []any:
			if len(a) != 2 {
				return nil, fmt.Errorf("Fn::Sub wants [string, map], got %v", arg)
			}
			format, _ = a[0].(string)
			m, _ := a[1].(map[string]any)
			for k, v := range m {
				r, err := e.eval(v)
				if err != nil {
					return nil, fmt.Errorf("Fn::Sub variable %s: %w", k, err)
				}
				vars[k] = r
			}
		}
		var subErr error
		out := subVar.ReplaceAllStringFunc(format, func(m string) string {
			g := subVar.FindStringSubmatch(m)
			if g[1] == "!" {
				return "${" + g[2] + "}"
			}
			name := g[2]
			if v, ok := vars[name]; ok {
				return fmt.Sprint(v)
			}
			if res, attr, ok := strings.Cut(name, "."); ok {
				if _, known := e.t.section("Resources")[res]; !known {
					subErr = fmt.Errorf("Fn::Sub: ${%s} names no resource", name)
				}
				return "{{GetAtt " + res + "." + attr + "}}"
			}
			v, err := e.ref(name)
			if err != nil {
				subErr = fmt.Errorf("Fn::Sub: %w", err)
			}
			return fmt.Sprint(v)
		})
		return out, subErr
	case "Fn::Join":
		if len(args) != 2 {
			return nil, fmt.Errorf("Fn::Join wants [sep, list], got %v", arg)
		}
		sep, _ := args[0].(string)
		l, err := e.eval(args[1])
		if err != nil {
			return nil, err
		}
		items, ok := l.([]any)
		if !ok {
			return fmt.Sprintf("{{Join %v}}", l), nil
		}
		parts := make([]string, len(items))
		for i, it := range items {
			parts[i] = fmt.Sprint(it)
		}
		return strings.Join(parts, sep), nil
	case "Fn::Select":
		vals, err := e.evalList(args, 2)
		if err != nil {
			return nil, err
		}
		i, err := strconv.Atoi(fmt.Sprint(vals[0]))
		if err != nil {
			return nil, fmt.Errorf("Fn::Select index %v", vals[0])
		}
		items, ok := vals[1].([]any)
		if !ok {
			return fmt.Sprintf("{{Select %d %v}}", i, vals[1]), nil
		}
		if i < 0 || i >= len(items) {
			return nil, fmt.Errorf("Fn::Select index %d out of %d", i, len(items))
		}
		return items[i], nil
	case "Fn::Split":
		vals, err := e.evalList(args, 2)
		if err != nil {
			return nil, err
		}
		return toAnyList(strings.Split(fmt.Sprint(vals[1]), fmt.Sprint(vals[0]))), nil
	case "Fn::Base64":
		// Kept as text: the tests read what the instance will run.
		return e.eval(arg)
	case "Fn::GetAZs":
		return []any{"us-east-2a", "us-east-2b", "us-east-2c"}, nil
	case "Fn::Cidr":
		return fmt.Sprintf("{{Cidr %v}}", arg), nil
	}
	return nil, fmt.Errorf("unsupported intrinsic %s", fn)
}

func (e *env) evalList(args []any, n int) ([]any, error) {
	if n >= 0 && len(args) != n {
		return nil, fmt.Errorf("want %d arguments, got %d", n, len(args))
	}
	out := make([]any, len(args))
	for i, a := range args {
		v, err := e.eval(a)
		if err != nil {
			return nil, err
		}
		out[i] = v
	}
	return out, nil
}

// mustEval evaluates v or fails the test.
func (e *env) mustEval(tb testing.TB, v any) any {
	tb.Helper()
	r, err := e.eval(v)
	if err != nil {
		tb.Fatalf("%s: %v", e.t.name, err)
	}
	return r
}

// allowedValues returns a parameter's AllowedValues as strings.
func allowedValues(t *tmpl, param string) []string {
	l, _ := dig(t.section("Parameters"), param, "AllowedValues").([]any)
	var out []string
	for _, v := range l {
		out = append(out, fmt.Sprint(v))
	}
	return out
}

// walk calls fn for every value in v, depth first, with its path.
func walk(v any, path []string, fn func(path []string, v any)) {
	fn(path, v)
	switch x := v.(type) {
	case map[string]any:
		for _, k := range slices.Sorted(maps.Keys(x)) {
			walk(x[k], append(slices.Clip(path), k), fn)
		}
	case []any:
		for i, item := range x {
			walk(item, append(slices.Clip(path), strconv.Itoa(i)), fn)
		}
	}
}

func TestDecodeTemplateShortForms(t *testing.T) {
	src := `
A: !Ref X
B: !GetAtt Res.Outputs.Name
C: !If [Cond, !Sub "${AWS::Region}-x", !Ref AWS::NoValue]
D: !Base64
  Fn::Sub: hello
E: !Select [0, !GetAZs ""]
F: !Not [!Condition Other]
G: !Join [",", !GetAtt Acc.Ipv4Addresses]
`
	got, err := decodeTemplate([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"A": map[string]any{"Ref": "X"},
		"B": map[string]any{"Fn::GetAtt": []any{"Res", "Outputs.Name"}},
		"C": map[string]any{"Fn::If": []any{"Cond", map[string]any{"Fn::Sub": "${AWS::Region}-x"}, map[string]any{"Ref": "AWS::NoValue"}}},
		"D": map[string]any{"Fn::Base64": map[string]any{"Fn::Sub": "hello"}},
		"E": map[string]any{"Fn::Select": []any{0, map[string]any{"Fn::GetAZs": ""}}},
		"F": map[string]any{"Fn::Not": []any{map[string]any{"Condition": "Other"}}},
		"G": map[string]any{"Fn::Join": []any{",", map[string]any{"Fn::GetAtt": []any{"Acc", "Ipv4Addresses"}}}},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("decodeTemplate =\n%v\nwant\n%v", got, want)
	}
	for _, bad := range []string{"A: 1\nA: 2\n", "A: !Bogus x\n", "A: !GetAtt NoDot\n", "a: &x [1]\nb: *x\n"} {
		if _, err := decodeTemplate([]byte(bad)); err == nil {
			t.Errorf("decodeTemplate(%q) succeeded, want an error", bad)
		}
	}
}

// TestTemplatesLoad checks every template loads, has resources, and that
// every Ref, GetAtt, Sub variable and condition it uses is defined.
func TestTemplatesLoad(t *testing.T) {
	files, err := filepath.Glob("*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(files)
	want := slices.Sorted(slices.Values(templateFiles))
	if !slices.Equal(files, want) {
		t.Errorf("templates in the directory = %v, want %v (update templateFiles)", files, want)
	}
	for _, name := range templateFiles {
		t.Run(strings.TrimSuffix(name, ".yaml"), func(t *testing.T) {
			tp := load(t, name)
			if tp.root["AWSTemplateFormatVersion"] != "2010-09-09" {
				t.Errorf("AWSTemplateFormatVersion = %v", tp.root["AWSTemplateFormatVersion"])
			}
			if len(tp.section("Resources")) == 0 {
				t.Fatal("no resources")
			}
			defined := func(n string) bool {
				_, p := tp.section("Parameters")[n]
				_, r := tp.section("Resources")[n]
				_, ps := pseudo[n]
				return p || r || ps || n == "AWS::NoValue"
			}
			walk(tp.root, nil, func(path []string, v any) {
				m, ok := v.(map[string]any)
				if !ok || len(m) != 1 {
					return
				}
				where := strings.Join(path, "/")
				if s, ok := m["Ref"].(string); ok && !defined(s) {
					t.Errorf("%s: Ref to undefined %q", where, s)
				}
				if l, ok := m["Fn::GetAtt"].([]any); ok {
					if _, ok := tp.section("Resources")[fmt.Sprint(l[0])]; !ok {
						t.Errorf("%s: GetAtt of undefined resource %v", where, l[0])
					}
				}
				if s, ok := m["Condition"].(string); ok && len(path) > 0 {
					if _, ok := tp.section("Conditions")[s]; !ok {
						t.Errorf("%s: undefined condition %q", where, s)
					}
				}
				if l, ok := m["Fn::If"].([]any); ok {
					if _, ok := tp.section("Conditions")[fmt.Sprint(l[0])]; !ok {
						t.Errorf("%s: Fn::If on undefined condition %v", where, l[0])
					}
				}
				if sub, ok := m["Fn::Sub"]; ok {
					format, _ := sub.(string)
					vars := map[string]any{}
					if l, ok := sub.([]any); ok && len(l) == 2 {
						format, _ = l[0].(string)
						vars, _ = l[1].(map[string]any)
					}
					for _, g := range subVar.FindAllStringSubmatch(format, -1) {
						if g[1] == "!" {
							continue
						}
						name := g[2]
						if _, ok := vars[name]; ok {
							continue
						}
						if res, _, ok := strings.Cut(name, "."); ok {
							name = res
						}
						if !defined(name) {
							t.Errorf("%s: Fn::Sub variable ${%s} is undefined", where, g[2])
						}
					}
				}
			})
			for name, r := range tp.section("Resources") {
				if c, ok := dig(r, "Condition").(string); ok {
					if _, ok := tp.section("Conditions")[c]; !ok {
						t.Errorf("resource %s: undefined condition %q", name, c)
					}
				}
			}
		})
	}
}

// FuzzDecodeTemplate feeds the loader arbitrary YAML: it must never panic,
// and a document it accepts decodes the same way twice.
func FuzzDecodeTemplate(f *testing.F) {
	// Seeds are fragments: whole templates make each execution slow.
	f.Add([]byte("Resources:\n  A:\n    Type: X\n    Properties:\n      P: !If [C, !Ref B, !Ref AWS::NoValue]\n"))
	f.Add([]byte("UserData:\n  Fn::Base64: !Sub\n    - |\n      echo ${A} $B\n    - A: !Select [0, !Split [\"/\", !Ref X]]\n"))
	f.Add([]byte("A: !GetAtt B.C.D\nE: !Sub [\"${X}\", {X: !Ref Y}]\n"))
	f.Add([]byte("a: &x !Ref Y\nb: *x\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 4096 {
			return
		}
		v, err := decodeTemplate(data)
		if err != nil {
			return
		}
		w, err := decodeTemplate(data)
		if err != nil || fmt.Sprint(v) != fmt.Sprint(w) {
			t.Fatalf("decodeTemplate is not deterministic: %v / %v (%v)", v, w, err)
		}
	})
}
