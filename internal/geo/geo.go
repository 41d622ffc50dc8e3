// Package geo places a client address: country, region, city, location and
// AS from MaxMind DB files (GeoIP2, GeoLite2, DB-IP Lite), or a class for
// addresses no database can place (loopback, private, documentation...).
//
// # Lookups
//
// [DB.Lookup] returns a [Location], never an error value. When the
// database has a record for the address, the record wins and the class
// is "public", whatever the address: tests
// and the local demo deliberately map documentation ranges (203.0.113.0/24
// and friends) to countries, and MaxMind's real databases have no records
// for special-purpose space, so in production a placed address is a
// routable one. Otherwise the address gets only its class from [Classify]
// ("loopback", "private", "documentation", ...; "public" when it is
// routable but the database does not know it). A country is never made up.
//
// A record that exists but does not decode (a field of the wrong type, a
// name longer than the decoder allows) is not "unplaced": the lookup sets
// [Location.Error], counts it in originlens_geo_lookup_errors_total and
// logs it (at most one line per database every [LookupErrorLogInterval],
// with the number of errors since the last line). What can still be
// decoded is kept: the country and continent, decoded with the smaller
// Country model, so that country rules (an embargo) still apply. The
// rules (internal/policy) decide what a lookup error gets.
//
// Coordinates that are not finite or lie outside [-90, 90] (latitude) or
// [-180, 180] (longitude) are not a location: HasLocation stays false and
// [Location.LocationInvalid] is set.
//
// # Databases
//
// The City database may be any City or Country database that
// geoip2-golang reads (GeoIP2-City, GeoLite2-City, GeoIP2-Country,
// DBIP-City-Lite, ...): the kind is taken from the metadata's database
// type. The optional ASN database is GeoLite2-ASN or DB-IP's ASN Lite.
// With no City database the DB only classifies and [Open] logs one warning.
//
// Files are read whole into memory (not memory-mapped: a file rewritten in
// place under a mapping crashes the process with SIGBUS, or changes the
// answers of lookups in flight) and opened with maxminddb-golang's
// OpenBytes; records are decoded with geoip2-golang's models and their
// generated decoders. A decoded
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
// inode), size or modification time changed is read whole into a new
// buffer, verified (the file did not change while it was read, metadata,
// database type, maxminddb's full structural verification and test
// lookups) and swapped in atomically. The database in use is never
// touched: lookups that started on it finish on it, and the garbage
// collector frees it after them. A file that fails any check (truncated,
// half-written, garbage, another kind of database, not a regular file
// such as a FIFO or a directory, larger than [MaxFileSize]) is refused:
// the error is logged, counted in originlens_geo_reload_errors_total and the
// database in use stays in use; the refused file is not retried until it
// changes again. So no way of writing the file crashes the process, and a
// partial file is not put in use (it would have to pass the full
// verification); renaming a complete file over it (as geoipupdate does)
// is the way that never logs a refusal.
//
// # Memory
//
// A database costs its file size in heap, plus the record cache (a few
// MiB): a 58.6 MB City database built with internal/mmdb added 58.6 MB of
// live heap and 59 MB of RSS at Open. During a reload the old and the new
// database are both held until the lookups on the old one end, and
// maxminddb's Verify (which reloads ran before, on the mapped file, too)
// leaves garbage: the same database peaked at about 290 MB of RSS over
// the start right after a reload, 68 MB once that garbage was returned
// to the system (measured after debug.FreeOSMemory; otherwise the
// runtime's background scavenger returns it gradually). (Memory-mapped, the file cost no heap, but
// page cache, and a file written in place crashed the process.)
//
// # Metrics
//
// With a [Config.Registerer]: originlens_geo_database_build_timestamp_seconds
// (gauge, build epoch of the database in use), originlens_geo_reloads_total,
// originlens_geo_reload_errors_total and originlens_geo_lookup_errors_total
// (counters), all labelled database="city"|"asn".
package geo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

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
	// Error is set when a database has a record for the address that
	// could not be decoded: which database and why, at most
	// [MaxErrorLength] bytes (e.g. "city record: decoding field location:
	// ..."). The fields above then hold only what could be decoded.
	Error string
	// LocationInvalid is set when the record's coordinates were not
	// finite or out of range and were dropped (HasLocation is false).
	LocationInvalid bool
}

// MaxErrorLength bounds [Location.Error].
const MaxErrorLength = 200

// LookupErrorLogInterval is the least time between two log lines about
// records that failed to decode, per database.
const LookupErrorLogInterval = 10 * time.Second

// MaxFileSize is the largest database file read: a file is read whole into
// memory, so a larger one (a sparse file of terabytes left in its place)
// is refused rather than allocated. City, Country and ASN databases
// (GeoLite2-City is ~60 MB) are far under it.
const MaxFileSize = 2 << 30

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

// DB looks addresses up. It is safe for concurrent use; lookups never
// wait: not for a database to be read or verified, nor for one to be
// retired.
type DB struct {
	city, asn  *source
	log        *slog.Logger
	interval   time.Duration
	reloads    *prometheus.CounterVec
	errs       *prometheus.CounterVec
	builds     *prometheus.GaugeVec
	lookupErrs *prometheus.CounterVec

	mu     sync.Mutex // serialises reloads and Close
	closed bool
}

// source is one database file and the generation of it in use.
type source struct {
	name string // "city" or "asn"
	path string
	cur  atomic.Pointer[generation]
	seen os.FileInfo // the file last opened or refused; guarded by DB.mu

	lookupErrs prometheus.Counter // nil without a registerer
	errMu      sync.Mutex         // guards lastErrLog and errsSince
	lastErrLog time.Time
	errsSince  int // lookup errors not logged since lastErrLog
}

// generation is one opened version of a database file: a reader over a
// buffer that holds the whole file and that nothing writes to, so lookups
// use it without locks, and an old generation is simply dropped (the
// garbage collector frees it once the lookups on it have returned).
type generation struct {
	r     *maxminddb.Reader
	kind  int         // kindCity, kindCountry or kindASN
	cache recordCache // decoded records by data offset
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
		if d.lookupErrs != nil {
			s.lookupErrs = d.lookupErrs.WithLabelValues(s.name)
		}
		g, fi, err := d.open(s, false)
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

// readWhole reads the file at path into memory and returns it with the
// file's information as it was read. It fails when the file changed while
// it was read (its size, modification time or length), so that a file
// caught while being written is not taken for a database.
func readWhole(path string) ([]byte, os.FileInfo, error) {
	// O_NONBLOCK: opening a FIFO put in the file's place must not wait
	// for a writer (it has no effect on a regular file).
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	before, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	if !before.Mode().IsRegular() {
		return nil, before, fmt.Errorf("not a regular file (%v)", before.Mode().Type())
	}
	size := before.Size()
	if size <= 0 {
		return nil, before, errors.New("file is empty")
	}
	if size > MaxFileSize {
		return nil, before, fmt.Errorf("file of %d bytes is larger than %d", size, int64(MaxFileSize))
	}
	data := make([]byte, size)
	if _, err := io.ReadFull(f, data); err != nil {
		return nil, before, fmt.Errorf("reading %d bytes: %w", size, err)
	}
	var one [1]byte
	if n, _ := f.Read(one[:]); n != 0 {
		return nil, before, errors.New("file grew while it was read")
	}
	after, err := f.Stat()
	if err != nil {
		return nil, before, err
	}
	if after.Size() != size || !after.ModTime().Equal(before.ModTime()) {
		return nil, after, errors.New("file changed while it was read")
	}
	return data, before, nil
}

// open reads s.path whole and checks it: it must not change while read,
// maxminddb must open it, the database type must suit the source (City or
// Country for "city", ASN or ISP for "asn") and test lookups must decode.
// verify adds maxminddb's full structural verification (reloads do it, to
// refuse a corrupted replacement; at start a broken file fails the test
// lookups or the start itself). It returns the file's information as read
// (nil when it could not be read).
func (d *DB) open(s *source, verify bool) (*generation, os.FileInfo, error) {
	data, fi, err := readWhole(s.path)
	if err != nil {
		return nil, fi, fmt.Errorf("geo: reading %s database %s: %w", s.name, s.path, err)
	}
	r, err := maxminddb.OpenBytes(data)
	if err != nil {
		return nil, fi, fmt.Errorf("geo: opening %s database %s: %w", s.name, s.path, err)
	}
	g := &generation{r: r}
	fail := func(format string, args ...any) (*generation, os.FileInfo, error) {
		return nil, fi, fmt.Errorf("geo: %s database %s (type %q): "+format,
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
	return g, fi, nil
}

// Lookup places addr. It returns no error: an address that cannot be
// placed gets only a Class (see the package documentation for the order),
// and a record that does not decode sets [Location.Error]. An IPv4-mapped
// address is looked up as the IPv4 address it holds. It is safe for
// concurrent use and never blocks (but for the rate-limited log line of a
// lookup error). An address of the NAT64 well-known prefix 64:ff9b::/96 is
// looked up, and classified, as the IPv4 address it embeds.
func (d *DB) Lookup(addr netip.Addr) Location {
	addr = embeddedIPv4(addr.Unmap())
	var loc Location
	placed := false
	if d.city != nil {
		if g := d.city.cur.Load(); g != nil {
			var failed bool
			placed, failed = g.lookup(addr, &loc)
			if failed {
				d.lookupFailed(d.city, addr, loc.Error)
			}
		}
	}
	if d.asn != nil {
		if g := d.asn.cur.Load(); g != nil {
			if _, failed := g.lookup(addr, &loc); failed {
				d.lookupFailed(d.asn, addr, loc.Error)
			}
		}
	}
	if placed {
		loc.Class = ClassPublic
	} else {
		loc.Class = Classify(addr)
	}
	return loc
}

// nat64 is the NAT64 well-known prefix (RFC 6052), under which a
// translator shows IPv4 host a.b.c.d as 64:ff9b::a.b.c.d.
var nat64 = netip.MustParsePrefix("64:ff9b::/96")

// embeddedIPv4 returns the IPv4 address a NAT64 well-known-prefix address
// embeds (GeoIP databases alias IPv4-mapped, 6to4 and Teredo space, but not
// this prefix), else addr.
func embeddedIPv4(addr netip.Addr) netip.Addr {
	if !nat64.Contains(addr) {
		return addr
	}
	b := addr.As16()
	return netip.AddrFrom4([4]byte(b[12:]))
}

// lookupFailed counts a record of s that did not decode and logs it, at
// most once per [LookupErrorLogInterval] per database.
func (d *DB) lookupFailed(s *source, addr netip.Addr, msg string) {
	if s.lookupErrs != nil {
		s.lookupErrs.Inc()
	}
	s.errMu.Lock()
	now := time.Now()
	if !s.lastErrLog.IsZero() && now.Sub(s.lastErrLog) < LookupErrorLogInterval {
		s.errsSince++
		s.errMu.Unlock()
		return
	}
	suppressed := s.errsSince
	s.lastErrLog, s.errsSince = now, 0
	s.errMu.Unlock()
	d.log.Error("GeoIP record does not decode: lookup error, left to the rules", "database", s.name,
		"addr", addr, "err", msg, "errors_not_logged", suppressed)
}

// lookup fills loc with what g knows of addr. It reports whether g placed
// it (a country or continent) and whether g's record failed to decode
// (then loc.Error says why, and loc holds what could be decoded). Decoded
// records, failed ones included, are cached by their offset in the data
// section, which identifies a record within one database file.
func (g *generation) lookup(addr netip.Addr, loc *Location) (placed, failed bool) {
	res := g.r.Lookup(addr)
	if !res.Found() {
		// Not in the database, or not an address it can hold (IPv6 in
		// an IPv4 database): nothing to decode.
		return false, false
	}
	off := res.Offset()
	rec, ok := g.cache.get(off)
	if !ok {
		if err := g.decode(res, &rec); err != nil {
			rec = Location{Error: errText(g.kind, err)}
			g.fallback(res, &rec)
		}
		g.cache.put(off, rec)
	}
	failed = rec.Error != ""
	if g.kind == kindASN {
		loc.ASN, loc.ASOrg = rec.ASN, rec.ASOrg
		if failed && loc.Error == "" {
			loc.Error = rec.Error
		}
		return false, failed
	}
	asn, asOrg, asnErr := loc.ASN, loc.ASOrg, loc.Error
	*loc = rec
	loc.ASN, loc.ASOrg = asn, asOrg
	if loc.Error == "" {
		loc.Error = asnErr
	}
	return loc.CountryISO != "" || loc.ContinentCode != "", failed
}

// errText is the [Location.Error] of a record of a database of kind k
// that failed with err: bounded, valid UTF-8.
func errText(k int, err error) string {
	s := "city record: "
	if k == kindASN {
		s = "asn record: "
	}
	s += err.Error()
	if len(s) > MaxErrorLength {
		s = s[:MaxErrorLength]
		for len(s) > 0 && !utf8.ValidString(s) {
			s = s[:len(s)-1]
		}
	}
	return s
}

// fallback decodes what it can of a record that failed to decode whole:
// the country and continent with the Country model (which skips the city,
// location and subdivisions), else each code alone; the AS number alone.
func (g *generation) fallback(res maxminddb.Result, loc *Location) {
	if g.kind == kindASN {
		var n uint32
		if res.DecodePath(&n, "autonomous_system_number") == nil {
			loc.ASN = n
		}
		return
	}
	var c geoip2.Country
	if res.Decode(&c) == nil {
		loc.CountryISO, loc.CountryName = c.Country.ISOCode, c.Country.Names.English
		loc.ContinentCode = c.Continent.Code
		return
	}
	var iso, cont string
	if res.DecodePath(&iso, "country", "iso_code") == nil && len(iso) == 2 {
		loc.CountryISO = iso
	}
	if res.DecodePath(&cont, "continent", "code") == nil && len(cont) == 2 {
		loc.ContinentCode = cont
	}
}

// ValidCoordinates reports whether lat and lon are a place on Earth:
// finite, lat in [-90, 90] and lon in [-180, 180].
func ValidCoordinates(lat, lon float64) bool {
	return !math.IsNaN(lat) && !math.IsNaN(lon) && lat >= -90 && lat <= 90 && lon >= -180 && lon <= 180
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
		if lat, lon := *c.Location.Latitude, *c.Location.Longitude; ValidCoordinates(lat, lon) {
			loc.HasLocation, loc.Lat, loc.Lon = true, lat, lon
		} else {
			loc.LocationInvalid = true
		}
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
		g, _, err := d.open(s, true)
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
		s.cur.Store(g) // lookups on the old generation finish on it
		md := g.r.Metadata
		d.log.Info("GeoIP database reloaded", "database", s.name, "path", s.path,
			"type", md.DatabaseType, "built", md.BuildTime().UTC())
	}
	return errors.Join(errs...)
}

// Close drops the databases (lookups in flight finish on them). Later
// lookups only classify; a running [DB.Watch] stops reloading.
func (d *DB) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	for _, s := range d.sources() {
		s.cur.Store(nil)
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
	d.lookupErrs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "originlens_geo_lookup_errors_total",
		Help: "Lookups whose GeoIP record exists but did not decode (Location.Error set; the rules decide, deny by default).",
	}, []string{"database"})
	var err error
	if d.lookupErrs, err = register(reg, d.lookupErrs); err != nil {
		return err
	}
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
