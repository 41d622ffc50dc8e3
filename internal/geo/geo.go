// Package geo places a client address: country, region, city, location and
// AS from MaxMind DB files (GeoIP2, GeoLite2, DB-IP Lite), or a class for
// addresses no database can place (loopback, private, documentation...).
//
// # Lookups
//
// [DB.Lookup] never fails. When the database has a record for the address,
// the record wins and the class is "public", whatever the address: tests
// and the local demo deliberately map documentation ranges (203.0.113.0/24
// and friends) to countries, and MaxMind's real databases have no records
// for special-purpose space, so in production a placed address is a
// routable one. Otherwise the address gets only its class from [Classify]
// ("loopback", "private", "documentation", ...; "public" when it is
// routable but the database does not know it). A country is never made up.
//
// # Databases
//
// The City database may be any City or Country database that
// geoip2-golang reads (GeoIP2-City, GeoLite2-City, GeoIP2-Country,
// DBIP-City-Lite, ...): the kind is taken from the metadata's database
// type. The optional ASN database is GeoLite2-ASN or DB-IP's ASN Lite.
// With no City database the DB only classifies and [Open] logs one warning.
//
// Files are read with maxminddb-golang (memory-mapped) and records decoded
// with geoip2-golang's models and their generated decoders. A decoded
// record is cached by its offset in the data section (as maxminddb-golang
// suggests), so a lookup of a network seen recently costs a tree walk and
// a map read, with no allocation; the cache holds at most 16384 records
// per database.
//
// # Hot reload
//
// [DB.Watch] polls the files (os.Stat every [Config.ReloadInterval]; no
// inotify, which also makes it work on any file system and with
// geoipupdate's write-then-rename). A file whose identity (device and
// inode), size or modification time changed is opened, verified
// (metadata, database type, a full structural verification and a test
// lookup) and swapped in atomically. The previous database is closed only
// after every lookup that started on it has finished. A file that fails
// verification is refused: the error is logged, counted in
// originlens_geo_reload_errors_total and the old database keeps serving;
// the broken file is not retried until it changes again. Replace files by
// renaming a complete new file over them, as geoipupdate does: the open
// database is memory-mapped, and writing into that same file in place
// changes it under the lookups in flight.
//
// # Metrics
//
// With a [Config.Registerer]: originlens_geo_database_build_timestamp_seconds
// (gauge, build epoch of the database in use), originlens_geo_reloads_total
// and originlens_geo_reload_errors_total (counters), all labelled
// database="city"|"asn".
package geo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oschwald/geoip2-golang/v2"
	"github.com/oschwald/maxminddb-golang/v2"
	"github.com/prometheus/client_golang/prometheus"
)

// Location is what the databases know of an address. The zero value means
// "nothing known". Class is always set by [DB.Lookup].
type Location struct {
	Class          string // public, loopback, private, shared, link-local, documentation, multicast, unspecified, reserved
	CountryISO     string // ISO 3166-1 alpha-2, e.g. "DE"
	CountryName    string // English name
	ContinentCode  string // e.g. "EU"
	RegionISO      string // first subdivision ISO code, e.g. "BY"
	RegionName     string
	City           string
	HasLocation    bool // Lat and Lon are meaningful
	Lat, Lon       float64
	AccuracyRadius uint16 // km
	TimeZone       string
	ASN            uint32 // 0 without an ASN database or when unknown
	ASOrg          string
}

// DefaultReloadInterval is how often [DB.Watch] polls the files when
// [Config.ReloadInterval] is zero.
const DefaultReloadInterval = 10 * time.Second

// Config configures [Open].
type Config struct {
	CityPath   string // City or Country database; empty: classify only
	ASNPath    string // optional ASN database
	Logger     *slog.Logger
	Registerer prometheus.Registerer // nil: no metrics
	// ReloadInterval is how often [DB.Watch] checks the files for
	// replacement; zero means [DefaultReloadInterval].
	ReloadInterval time.Duration
}

// DB looks addresses up. It is safe for concurrent use; lookups never wait
// for a database to be opened or verified, only (for microseconds) for the
// unmapping of a database they raced with.
type DB struct {
	city, asn *source
	log       *slog.Logger
	interval  time.Duration
	reloads   *prometheus.CounterVec
	errs      *prometheus.CounterVec
	builds    *prometheus.GaugeVec

	mu     sync.Mutex // serialises reloads and Close
	closed bool
}

// source is one database file and the generation of it in use.
type source struct {
	name string // "city" or "asn"
	path string
	cur  atomic.Pointer[generation]
	seen os.FileInfo // the file last opened or refused; guarded by DB.mu
}

// generation is one opened version of a database file. Lookups hold mu for
// reading while they use r; retiring takes it for writing, so it waits for
// them, then closes r and sets it to nil.
type generation struct {
	mu    sync.RWMutex
	r     *maxminddb.Reader // nil once retired
	kind  int               // kindCity, kindCountry or kindASN
	cache recordCache       // decoded records by data offset
}

// Database kinds, from the metadata's database type.
const (
	kindCity = iota
	kindCountry
	kindASN
)

// Open opens the configured databases. With no paths it returns a DB that
// only classifies addresses, and logs one warning saying so. A database
// that cannot be opened or is not of the expected kind is an error.
func Open(cfg Config) (*DB, error) {
	d := &DB{log: cfg.Logger, interval: cfg.ReloadInterval}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	if d.interval <= 0 {
		d.interval = DefaultReloadInterval
	}
	if err := d.registerMetrics(cfg.Registerer); err != nil {
		return nil, err
	}
	if cfg.CityPath == "" {
		d.log.Warn("no GeoIP database configured: client addresses are only classified, geo keys stay empty")
	} else {
		d.city = &source{name: "city", path: cfg.CityPath}
	}
	if cfg.ASNPath != "" {
		d.asn = &source{name: "asn", path: cfg.ASNPath}
	}
	for _, s := range d.sources() {
		fi, err := os.Stat(s.path)
		if err != nil {
			d.Close()
			return nil, fmt.Errorf("geo: %w", err)
		}
		g, err := d.open(s, false)
		if err != nil {
			d.Close()
			return nil, err
		}
		s.seen = fi
		s.cur.Store(g)
		md := g.r.Metadata
		d.log.Info("GeoIP database opened", "database", s.name, "path", s.path,
			"type", md.DatabaseType, "built", md.BuildTime().UTC())
	}
	return d, nil
}

func (d *DB) sources() []*source {
	var ss []*source
	if d.city != nil {
		ss = append(ss, d.city)
	}
	if d.asn != nil {
		ss = append(ss, d.asn)
	}
	return ss
}

// probes are looked up to check a database: an error decoding the record
// of any of them refuses the file.
var probes = []netip.Addr{
	netip.MustParseAddr("1.1.1.1"),
	netip.MustParseAddr("203.0.113.1"),
	netip.MustParseAddr("2001:db8::1"),
	netip.MustParseAddr("2a00:1450::1"),
}

// open opens and checks s.path: the database type must suit the source
// (City or Country for "city", ASN or ISP for "asn") and test lookups must
// decode. verify adds maxminddb's full structural verification (reloads do
// it, to refuse a corrupted replacement).
func (d *DB) open(s *source, verify bool) (*generation, error) {
	r, err := maxminddb.Open(s.path)
	if err != nil {
		return nil, fmt.Errorf("geo: opening %s database %s: %w", s.name, s.path, err)
	}
	g := &generation{r: r}
	fail := func(format string, args ...any) (*generation, error) {
		r.Close()
		return nil, fmt.Errorf("geo: %s database %s (type %q): "+format,
			append([]any{s.name, s.path, r.Metadata.DatabaseType}, args...)...)
	}
	t := r.Metadata.DatabaseType
	switch {
	case s.name == "asn" && (strings.Contains(t, "ASN") || strings.Contains(t, "ISP")):
		g.kind = kindASN
	case s.name == "asn":
		return fail("not an ASN database")
	case strings.Contains(t, "City") || strings.Contains(t, "Enterprise"):
		g.kind = kindCity
	case strings.Contains(t, "Country"):
		g.kind = kindCountry
	default:
		return fail("not a City or Country database")
	}
	if verify {
		if err := r.Verify(); err != nil {
			return fail("verifying: %w", err)
		}
	}
	for _, a := range probes {
		if a.Is6() && r.Metadata.IPVersion == 4 {
			continue // an IPv4-only database refuses IPv6 lookups
		}
		var loc Location
		if err := g.decode(r.Lookup(a), &loc); err != nil {
			return fail("test lookup of %v: %w", a, err)
		}
	}
	if d.builds != nil {
		d.builds.WithLabelValues(s.name).Set(float64(r.Metadata.BuildEpoch))
	}
	return g, nil
}

// acquire returns the generation in use with its read lock held, or nil
// when there is no database. The caller must call g.mu.RUnlock.
func (s *source) acquire() *generation {
	for {
		g := s.cur.Load()
		if g == nil {
			return nil
		}
		g.mu.RLock()
		if g.r != nil {
			return g
		}
		g.mu.RUnlock() // retired between Load and RLock: take the new one
	}
}

// retire waits for the lookups using g to finish, then closes it.
func (g *generation) retire() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.r != nil {
		g.r.Close()
		g.r = nil
	}
}

// Lookup places addr. It never fails: an address that cannot be placed
// gets only a Class (see the package documentation for the order). An
// IPv4-mapped address is looked up as the IPv4 address it holds. It is safe
// for concurrent use and does not block on reloads.
func (d *DB) Lookup(addr netip.Addr) Location {
	addr = addr.Unmap()
	var loc Location
	placed := false
	if d.city != nil {
		if g := d.city.acquire(); g != nil {
			placed = g.lookup(addr, &loc)
			g.mu.RUnlock()
		}
	}
	if d.asn != nil {
		if g := d.asn.acquire(); g != nil {
			g.lookup(addr, &loc)
			g.mu.RUnlock()
		}
	}
	if placed {
		loc.Class = ClassPublic
	} else {
		loc.Class = Classify(addr)
	}
	return loc
}

// lookup fills loc with what g knows of addr and reports whether g placed
// it (a country or continent). Decoded records are cached by their offset
// in the data section, which identifies a record within one database file.
func (g *generation) lookup(addr netip.Addr, loc *Location) bool {
	res := g.r.Lookup(addr)
	if !res.Found() {
		return false
	}
	off := res.Offset()
	rec, ok := g.cache.get(off)
	if !ok {
		if err := g.decode(res, &rec); err != nil {
			return false
		}
		g.cache.put(off, rec)
	}
	if g.kind == kindASN {
		loc.ASN, loc.ASOrg = rec.ASN, rec.ASOrg
		return false
	}
	asn, asOrg := loc.ASN, loc.ASOrg
	*loc = rec
	loc.ASN, loc.ASOrg = asn, asOrg
	return loc.CountryISO != "" || loc.ContinentCode != ""
}

// decode decodes the record of res with geoip2-golang's models (and their
// generated decoders) into loc.
func (g *generation) decode(res maxminddb.Result, loc *Location) error {
	switch g.kind {
	case kindASN:
		var a geoip2.ASN
		if err := res.Decode(&a); err != nil {
			return err
		}
		loc.ASN, loc.ASOrg = uint32(a.AutonomousSystemNumber), a.AutonomousSystemOrganization
		return nil
	case kindCountry:
		var c geoip2.Country
		if err := res.Decode(&c); err != nil {
			return err
		}
		loc.CountryISO, loc.CountryName = c.Country.ISOCode, c.Country.Names.English
		loc.ContinentCode = c.Continent.Code
		return nil
	}
	var c geoip2.City
	if err := res.Decode(&c); err != nil {
		return err
	}
	loc.CountryISO, loc.CountryName = c.Country.ISOCode, c.Country.Names.English
	loc.ContinentCode = c.Continent.Code
	if len(c.Subdivisions) > 0 {
		loc.RegionISO, loc.RegionName = c.Subdivisions[0].ISOCode, c.Subdivisions[0].Names.English
	}
	loc.City = c.City.Names.English
	if c.Location.Latitude != nil && c.Location.Longitude != nil {
		loc.HasLocation, loc.Lat, loc.Lon = true, *c.Location.Latitude, *c.Location.Longitude
	}
	loc.AccuracyRadius = c.Location.AccuracyRadius
	loc.TimeZone = c.Location.TimeZone
	return nil
}

// Watch reloads the databases when their files are replaced, checking
// every [Config.ReloadInterval], until ctx is done; then it returns nil.
// It blocks. A refused replacement is logged and counted, not returned.
// With no database configured it only waits for ctx.
func (d *DB) Watch(ctx context.Context) error {
	if len(d.sources()) == 0 {
		<-ctx.Done()
		return nil
	}
	t := time.NewTicker(d.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			_ = d.Reload() // logged and counted there
		}
	}
}

// Reload checks the files now and swaps in every one that was replaced
// since it was last opened or refused. It returns the errors of refused
// files (also logged and counted); the databases in use stay in use. It is
// safe for concurrent use (reloads are serialised) and blocks while a new
// file is verified.
func (d *DB) Reload() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return errors.New("geo: reload after close")
	}
	var errs []error
	for _, s := range d.sources() {
		fi, err := os.Stat(s.path)
		if err != nil {
			// geoipupdate renames, so the file is never missing for long;
			// keep serving the open one.
			if s.seen != nil {
				d.log.Warn("GeoIP database file missing, keeping the open one", "database", s.name, "err", err)
				s.seen = nil
			}
			continue
		}
		if s.seen != nil && os.SameFile(s.seen, fi) && s.seen.Size() == fi.Size() && s.seen.ModTime().Equal(fi.ModTime()) {
			continue
		}
		s.seen = fi
		g, err := d.open(s, true)
		if err != nil {
			d.log.Error("GeoIP database replacement refused, keeping the old one", "database", s.name, "err", err)
			if d.errs != nil {
				d.errs.WithLabelValues(s.name).Inc()
			}
			errs = append(errs, err)
			continue
		}
		if d.reloads != nil {
			d.reloads.WithLabelValues(s.name).Inc()
		}
		if old := s.cur.Swap(g); old != nil {
			old.retire()
		}
		md := g.r.Metadata
		d.log.Info("GeoIP database reloaded", "database", s.name, "path", s.path,
			"type", md.DatabaseType, "built", md.BuildTime().UTC())
	}
	return errors.Join(errs...)
}

// Close closes the databases once in-flight lookups have finished. Later
// lookups only classify; a running [DB.Watch] stops reloading.
func (d *DB) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	for _, s := range d.sources() {
		if g := s.cur.Swap(nil); g != nil {
			g.retire()
		}
	}
	return nil
}

func (d *DB) registerMetrics(reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	d.builds = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "originlens_geo_database_build_timestamp_seconds",
		Help: "Build time (metadata build epoch) of the GeoIP database in use, as a Unix timestamp.",
	}, []string{"database"})
	d.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "originlens_geo_reloads_total",
		Help: "GeoIP database files swapped in after being replaced on disk.",
	}, []string{"database"})
	d.errs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "originlens_geo_reload_errors_total",
		Help: "Replaced GeoIP database files refused as broken; the old database stayed in use.",
	}, []string{"database"})
	var err error
	d.builds, err = register(reg, d.builds)
	if err != nil {
		return err
	}
	if d.reloads, err = register(reg, d.reloads); err != nil {
		return err
	}
	d.errs, err = register(reg, d.errs)
	return err
}

// register registers c, or returns the collector already registered under
// its name (a second DB on the same registry shares the metrics).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, fmt.Errorf("geo: registering metrics: %w", err)
	}
	return c, nil
}
