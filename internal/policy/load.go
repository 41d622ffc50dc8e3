package policy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/originlens/originlens/internal/geo"
)

// MaxFileBytes bounds the rules file [Load] reads.
const MaxFileBytes = 1 << 20

// Error is a problem in a rules file. Its message is "FILE:LINE: reason",
// or "FILE: reason" when there is no line.
type Error struct {
	File   string
	Line   int // 1-based; 0 when not known
	Reason string
}

func (e *Error) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Reason)
	}
	return e.File + ": " + e.Reason
}

// Settling: a rules file that was modified less than Settle ago may still
// be being written in place (a YAML file cut at a line boundary is often
// valid and can lack a rule, such as the embargo). [LoadContext] reads such a
// file again once it has been left alone for Settle and adopts it only when
// both reads agree; it gives up after MaxSettleWait.
const (
	Settle        = 250 * time.Millisecond
	MaxSettleWait = 10 * time.Second
)

// ErrUnsettled is returned (wrapped) for a rules file that kept changing
// for MaxSettleWait.
var ErrUnsettled = errors.New("the file kept changing; write it elsewhere and rename it into place")

// maxSettleWait is MaxSettleWait; tests shorten it.
var maxSettleWait = MaxSettleWait

// Load reads and checks a rules file; see [LoadContext].
func Load(path string) (*Policy, error) {
	return LoadContext(context.Background(), path)
}

// LoadContext reads and checks a rules file. Errors in the file are an
// [*Error] naming the file, line and reason; a file that cannot be read is
// an error wrapping the [os] error. It does not block on a FIFO that has no
// writer (that is an empty file). A regular file modified less than
// [Settle] ago is read again after it settled (see [Settle]): LoadContext
// then blocks up to [MaxSettleWait] or until ctx is done. It is safe for
// concurrent use.
func LoadContext(ctx context.Context, path string) (*Policy, error) {
	data, err := readSettled(ctx, path)
	if err != nil {
		return nil, err
	}
	return Parse(path, data)
}

// readSettled reads path whole and, while its modification time is less
// than Settle old (or in the future), waits for Settle and reads it again,
// until two reads give the same bytes, size and modification time.
func readSettled(ctx context.Context, path string) ([]byte, error) {
	deadline := time.Now().Add(maxSettleWait)
	data, fi, err := readOnce(path)
	for err == nil && fi.Mode().IsRegular() {
		if age := time.Since(fi.ModTime()); age >= Settle {
			return data, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("policy: %s: %w (modified again within %v for %v)", path, ErrUnsettled, Settle, maxSettleWait)
		}
		t := time.NewTimer(Settle)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("policy: reading %s: %w", path, ctx.Err())
		case <-t.C:
		}
		var again []byte
		var fi2 os.FileInfo
		again, fi2, err = readOnce(path)
		if err == nil && bytes.Equal(again, data) && fi2.Size() == fi.Size() && fi2.ModTime().Equal(fi.ModTime()) {
			return data, nil
		}
		data, fi = again, fi2
	}
	return data, err
}

// readOnce reads path whole (at most MaxFileBytes) and returns what fstat
// said of it after the read.
func readOnce(path string) ([]byte, os.FileInfo, error) {
	// O_NONBLOCK: a FIFO put in the file's place with no writer gives
	// an empty read at once instead of blocking open(2) (and the SIGHUP
	// reloader with it) for ever. It has no effect on a regular file.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("policy: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileBytes+1))
	if err != nil {
		return nil, nil, fmt.Errorf("policy: reading %s: %w", path, err)
	}
	// After the read: a write during it shows in the modification time.
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("policy: %w", err)
	}
	if len(data) > MaxFileBytes {
		return nil, nil, &Error{File: path, Reason: fmt.Sprintf("larger than %d bytes", MaxFileBytes)}
	}
	return data, fi, nil
}

// Parse checks the rules in data; name is the file name used in errors.
// Errors are an [*Error].
func Parse(name string, data []byte) (*Policy, error) {
	ps := &parser{file: name}
	p, err := ps.parse(data)
	if err != nil {
		return nil, err
	}
	p.source = name
	return p, nil
}

type parser struct{ file string }

func (ps *parser) errf(n *yaml.Node, format string, args ...any) error {
	line := 0
	if n != nil {
		line = n.Line
	}
	return &Error{File: ps.file, Line: line, Reason: fmt.Sprintf(format, args...)}
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

func (ps *parser) yamlErr(err error) error {
	msg := err.Error()
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &Error{File: ps.file, Line: line, Reason: "YAML: " + m[2]}
	}
	return &Error{File: ps.file, Reason: "YAML: " + strings.TrimPrefix(msg, "yaml: ")}
}

func resolve(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func kind(n *yaml.Node) string {
	switch {
	case n.Kind == yaml.MappingNode:
		return "a mapping"
	case n.Kind == yaml.SequenceNode:
		return "a list"
	case n.Tag == "!!null":
		return "nothing"
	}
	return fmt.Sprintf("%q", n.Value)
}

// mapping calls f for each key of the mapping n, refusing keys not in
// allowed (nil allows any) and duplicate keys.
func (ps *parser) mapping(n *yaml.Node, what string, allowed []string, f func(key string, k, v *yaml.Node) error) error {
	n = resolve(n)
	if n.Kind != yaml.MappingNode {
		return ps.errf(n, "%s: want a mapping, got %s", what, kind(n))
	}
	seen := make(map[string]bool, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), resolve(n.Content[i+1])
		if k.Kind != yaml.ScalarNode {
			return ps.errf(k, "%s: want a plain key, got %s", what, kind(k))
		}
		if allowed != nil && !slices.Contains(allowed, k.Value) {
			return ps.errf(k, "%s: unknown key %q (want one of %s)", what, k.Value, strings.Join(allowed, ", "))
		}
		if seen[k.Value] {
			return ps.errf(k, "%s: duplicate key %q", what, k.Value)
		}
		seen[k.Value] = true
		if err := f(k.Value, k, v); err != nil {
			return err
		}
	}
	return nil
}

func (ps *parser) scalar(n *yaml.Node, what string) (string, error) {
	n = resolve(n)
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		return "", ps.errf(n, "%s: want a value, got %s", what, kind(n))
	}
	return n.Value, nil
}

// list returns the scalar items of a list, or of a single value.
func (ps *parser) list(n *yaml.Node, what string) ([]*yaml.Node, error) {
	n = resolve(n)
	var items []*yaml.Node
	switch {
	case n.Kind == yaml.SequenceNode:
		for _, it := range n.Content {
			it = resolve(it)
			if _, err := ps.scalar(it, what); err != nil {
				return nil, err
			}
			items = append(items, it)
		}
	case n.Kind == yaml.ScalarNode && n.Tag != "!!null":
		items = []*yaml.Node{n}
	default:
		return nil, ps.errf(n, "%s: want a list, got %s", what, kind(n))
	}
	if len(items) == 0 {
		return nil, ps.errf(n, "%s: empty list", what)
	}
	return items, nil
}

func (ps *parser) country(n *yaml.Node, what string) (string, error) {
	if countryIndex(n.Value) < 0 || !countries.has(n.Value) {
		return "", ps.errf(n, "%s: unknown country code %q (want ISO 3166-1 alpha-2, upper case, e.g. DE)", what, n.Value)
	}
	return n.Value, nil
}

var langCode = regexp.MustCompile(`^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$`)

func (ps *parser) lang(n *yaml.Node, what string) (string, error) {
	v, err := ps.scalar(n, what)
	if err != nil {
		return "", err
	}
	if !langCode.MatchString(v) {
		return "", ps.errf(n, "%s: %q is not a language code (e.g. de, pt-BR)", what, v)
	}
	return v, nil
}

var (
	topKeys   = []string{"default", "jurisdictions", "rules", "languages", "greetings", "default_lang"}
	ruleKeys  = []string{"name", "when", "then"}
	whenKeys  = []string{"country", "jurisdiction", "continent", "cidr", "asn", "class", "geo"}
	geoStates = []string{GeoError, GeoOK}
	thenKeys  = []string{"decision", "region", "reason"}
	continent = []string{"AF", "AN", "AS", "EU", "NA", "OC", "SA"}
	classes   = []string{geo.ClassPublic, geo.ClassLoopback, geo.ClassPrivate, geo.ClassShared, geo.ClassLinkLocal,
		geo.ClassDocumentation, geo.ClassMulticast, geo.ClassUnspecified, geo.ClassReserved}
)

func (ps *parser) parse(data []byte) (*Policy, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &Error{File: ps.file, Reason: "empty rules file"}
		}
		return nil, ps.yamlErr(err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, ps.errf(&extra, "a second YAML document; want one")
	} else if !errors.Is(err, io.EOF) {
		return nil, ps.yamlErr(err)
	}
	top := map[string]*yaml.Node{}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	if err := ps.mapping(root, "rules file", topKeys, func(key string, _, v *yaml.Node) error {
		top[key] = v
		return nil
	}); err != nil {
		return nil, err
	}

	p := &Policy{jurNames: []string{""}}
	jurs := map[string]*countrySet{}
	if n := top["jurisdictions"]; n != nil {
		if err := ps.mapping(n, "jurisdictions", nil, func(name string, k, v *yaml.Node) error {
			if name == "" {
				return ps.errf(k, "jurisdictions: empty name")
			}
			items, err := ps.list(v, "jurisdiction "+name)
			if err != nil {
				return err
			}
			set := &countrySet{}
			for _, it := range items {
				c, err := ps.country(it, "jurisdiction "+name)
				if err != nil {
					return err
				}
				set.add(c)
				if i := countryIndex(c); p.jurOf[i] == 0 {
					p.jurOf[i] = uint16(len(p.jurNames))
				}
			}
			jurs[name] = set
			p.jurNames = append(p.jurNames, name)
			return nil
		}); err != nil {
			return nil, err
		}
	}

	defaultLang := "en"
	if n := top["default_lang"]; n != nil {
		v, err := ps.lang(n, "default_lang")
		if err != nil {
			return nil, err
		}
		defaultLang = v
	}
	greetings := map[string]string{"en": "Hello!"}
	if n := top["greetings"]; n != nil {
		greetings = map[string]string{}
		if err := ps.mapping(n, "greetings", nil, func(_ string, k, v *yaml.Node) error {
			l, err := ps.lang(k, "greetings")
			if err != nil {
				return err
			}
			g, err := ps.scalar(v, "greeting "+l)
			if err != nil {
				return err
			}
			if g == "" || strings.ContainsFunc(g, func(r rune) bool { return r < ' ' || r == 0x7f }) {
				return ps.errf(v, "greeting %s: want one line of text without control characters", l)
			}
			greetings[l] = g
			return nil
		}); err != nil {
			return nil, err
		}
	}
	if _, ok := greetings[defaultLang]; !ok {
		at := top["greetings"]
		if n := top["default_lang"]; n != nil {
			at = n
		}
		return nil, ps.errf(at, "greetings: no greeting for the default language %q", defaultLang)
	}
	langIndex := map[string]uint16{defaultLang: 0}
	p.langs = []lang{{defaultLang, greetings[defaultLang]}}
	if n := top["languages"]; n != nil {
		if err := ps.mapping(n, "languages", nil, func(_ string, k, v *yaml.Node) error {
			c, err := ps.country(k, "languages")
			if err != nil {
				return err
			}
			l, err := ps.lang(v, "languages "+c)
			if err != nil {
				return err
			}
			g, ok := greetings[l]
			if !ok {
				return ps.errf(v, "languages %s: no greeting for language %q in greetings", c, l)
			}
			i, ok := langIndex[l]
			if !ok {
				i = uint16(len(p.langs))
				langIndex[l] = i
				p.langs = append(p.langs, lang{l, g})
			}
			p.langOf[countryIndex(c)] = i
			return nil
		}); err != nil {
			return nil, err
		}
	}

	p.def = outcome{decision: Serve}
	if n := top["default"]; n != nil {
		out, err := ps.outcome(n, "default", "")
		if err != nil {
			return nil, err
		}
		p.def = out
	}

	if n := top["rules"]; n != nil {
		n = resolve(n)
		if n.Kind != yaml.SequenceNode {
			return nil, ps.errf(n, "rules: want a list, got %s", kind(n))
		}
		names := map[string]int{}
		for _, rn := range n.Content {
			r, err := ps.rule(rn, jurs)
			if err != nil {
				return nil, err
			}
			if line, dup := names[r.name]; dup {
				return nil, ps.errf(rn, "rule %q: duplicate name (first at line %d)", r.name, line)
			}
			names[r.name] = r.line
			if r.then.decision == Serve && r.then.region == "" {
				r.then.region = p.def.region
			}
			for i := range p.rules {
				e := &p.rules[i]
				if e.when.has == 0 {
					return nil, ps.errf(rn, "rule %q can never match: rule %q (line %d) has no conditions and matches every client",
						r.name, e.name, e.line)
				}
				if e.when.covers(&r.when) {
					return nil, ps.errf(rn, "rule %q can never match: rule %q (line %d) matches every client it would match",
						r.name, e.name, e.line)
				}
			}
			p.rules = append(p.rules, r)
		}
	}
	return p, nil
}

func (ps *parser) rule(n *yaml.Node, jurs map[string]*countrySet) (rule, error) {
	n = resolve(n)
	r := rule{line: n.Line}
	var when, then *yaml.Node
	if err := ps.mapping(n, "rule", ruleKeys, func(key string, _, v *yaml.Node) error {
		switch key {
		case "name":
			name, err := ps.scalar(v, "rule name")
			if err != nil {
				return err
			}
			if strings.TrimSpace(name) == "" || strings.ContainsFunc(name, func(r rune) bool { return r < ' ' }) {
				return ps.errf(v, "rule name: want a non-empty single-line name")
			}
			r.name = name
		case "when":
			when = v
		case "then":
			then = v
		}
		return nil
	}); err != nil {
		return r, err
	}
	if r.name == "" {
		return r, ps.errf(n, "rule: missing name")
	}
	what := fmt.Sprintf("rule %q", r.name)
	if then == nil {
		return r, ps.errf(n, "%s: missing then", what)
	}
	out, err := ps.outcome(then, what+" then", r.name)
	if err != nil {
		return r, err
	}
	r.then = out
	if when == nil || (when.Kind == yaml.ScalarNode && when.Tag == "!!null") {
		return r, nil // matches every client
	}
	c := &r.when
	err = ps.mapping(when, what+" when", whenKeys, func(key string, _, v *yaml.Node) error {
		items, err := ps.list(v, what+" "+key)
		if err != nil {
			return err
		}
		for _, it := range items {
			switch key {
			case "country":
				cc, err := ps.country(it, what+" country")
				if err != nil {
					return err
				}
				c.country.add(cc)
				c.has |= keyCountry
			case "jurisdiction":
				set, ok := jurs[it.Value]
				if !ok {
					return ps.errf(it, "%s: unknown jurisdiction %q (define it under jurisdictions)", what, it.Value)
				}
				for i := range set {
					c.jurCountries[i] |= set[i]
				}
				c.jurisdiction = append(c.jurisdiction, it.Value)
				c.has |= keyJurisdiction
			case "continent":
				if !slices.Contains(continent, it.Value) {
					return ps.errf(it, "%s: unknown continent %q (want one of %s)", what, it.Value, strings.Join(continent, ", "))
				}
				c.continent = append(c.continent, it.Value)
				c.has |= keyContinent
			case "cidr":
				pfx, err := netip.ParsePrefix(it.Value)
				if err != nil {
					return ps.errf(it, "%s: invalid CIDR %q", what, it.Value)
				}
				if pfx != pfx.Masked() {
					return ps.errf(it, "%s: CIDR %s has host bits set (the network is %s)", what, pfx, pfx.Masked())
				}
				if pfx.Addr().Is4In6() {
					return ps.errf(it, "%s: CIDR %s is IPv4-mapped; clients are matched unmapped, write the IPv4 form", what, pfx)
				}
				c.cidr = append(c.cidr, pfx)
				c.has |= keyCIDR
			case "asn":
				v := strings.TrimPrefix(strings.TrimPrefix(it.Value, "AS"), "as")
				n, err := strconv.ParseUint(v, 10, 32)
				if err != nil || n == 0 {
					return ps.errf(it, "%s: invalid AS number %q (want 1..4294967295, optionally AS-prefixed)", what, it.Value)
				}
				c.asn = append(c.asn, uint32(n))
				c.has |= keyASN
			case "class":
				if !slices.Contains(classes, it.Value) {
					return ps.errf(it, "%s: unknown class %q (want one of %s)", what, it.Value, strings.Join(classes, ", "))
				}
				c.class = append(c.class, it.Value)
				c.has |= keyClass
			case "geo":
				if !slices.Contains(geoStates, it.Value) {
					return ps.errf(it, "%s: unknown geo lookup state %q (want one of %s)", what, it.Value, strings.Join(geoStates, ", "))
				}
				c.geo = append(c.geo, it.Value)
				c.has |= keyGeo
			}
		}
		return nil
	})
	return r, err
}

// outcome parses a `then` or `default` mapping; rule is the rule's name,
// the default reason ("" for the default, whose reason is "default").
func (ps *parser) outcome(n *yaml.Node, what, rule string) (outcome, error) {
	var o outcome
	if err := ps.mapping(n, what, thenKeys, func(key string, _, v *yaml.Node) error {
		s, err := ps.scalar(v, what+" "+key)
		if err != nil {
			return err
		}
		switch key {
		case "decision":
			if s != Serve && s != Redirect && s != Deny {
				return ps.errf(v, "%s: invalid decision %q (want serve, redirect or deny)", what, s)
			}
			o.decision = s
		case "region":
			o.region = s
		case "reason":
			o.reason = s
		}
		return nil
	}); err != nil {
		return o, err
	}
	switch {
	case o.decision == "":
		return o, ps.errf(n, "%s: missing decision", what)
	case o.decision == Redirect && o.region == "":
		return o, ps.errf(n, "%s: redirect needs a region", what)
	case o.decision == Deny && o.region != "":
		return o, ps.errf(n, "%s: deny takes no region", what)
	case o.decision == Serve && o.reason != "":
		return o, ps.errf(n, "%s: reason is for redirect and deny only", what)
	}
	if o.decision != Serve && o.reason == "" {
		o.reason = rule
		if rule == "" {
			o.reason = RuleDefault
		}
	}
	return o, nil
}
