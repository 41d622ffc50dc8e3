package mmdb_test

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/originlens/originlens/internal/mmdb"
)

const table = "# prefix\tcc\tname\tcont\tregion_iso\tregion\tcity\tlat\tlon\tacc\ttz\tasn\tas_org\n" +
	"\n" +
	"203.0.113.0/24\tDE\tGermany\tEU\tBE\tBerlin\tBerlin\t52.52\t13.405\t20\tEurope/Berlin\t64500\tExample Carrier GmbH\r\n" +
	"  # indented comment\n" +
	"2001:db8:1::/48 \t JP \tJapan\tAS\n" +
	"198.51.100.0/24\t\t\t\t\t\t\t\t\t\t\t64501\n"

func TestParseTable(t *testing.T) {
	got, err := mmdb.ParseTable(strings.NewReader(table))
	if err != nil {
		t.Fatalf("ParseTable: %v", err)
	}
	want := mmdb.Table{
		City: []mmdb.Entry{
			{Prefix: netip.MustParsePrefix("203.0.113.0/24"), CountryISO: "DE", CountryName: "Germany", ContinentCode: "EU",
				RegionISO: "BE", RegionName: "Berlin", City: "Berlin", Lat: 52.52, Lon: 13.405, AccuracyRadius: 20, TimeZone: "Europe/Berlin"},
			{Prefix: netip.MustParsePrefix("2001:db8:1::/48"), CountryISO: "JP", CountryName: "Japan", ContinentCode: "AS"},
		},
		ASN: []mmdb.ASNEntry{
			{Prefix: netip.MustParsePrefix("203.0.113.0/24"), Number: 64500, Org: "Example Carrier GmbH"},
			{Prefix: netip.MustParsePrefix("198.51.100.0/24"), Number: 64501},
		},
	}
	if d := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); d != "" {
		t.Errorf("ParseTable mismatch (-want +got):\n%s", d)
	}
	if err := mmdb.WriteCity(&bytes.Buffer{}, got.City, build); err != nil {
		t.Errorf("WriteCity(parsed): %v", err)
	}
	if err := mmdb.WriteASN(&bytes.Buffer{}, got.ASN, build); err != nil {
		t.Errorf("WriteASN(parsed): %v", err)
	}
}

func TestParseTableErrors(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"BadPrefix", "# c\n203.0.113.0\tDE\n", "line 2: prefix"},
		{"HostBits", "203.0.113.1/24\tDE\n", "host bits"},
		{"TooManyFields", "203.0.113.0/24" + strings.Repeat("\tx", 13) + "\n", "at most 13"},
		{"Lat", "203.0.113.0/24\tDE\t\t\t\t\t\tnorth\n", "lat"},
		{"LatNaN", "203.0.113.0/24\tDE\t\t\t\t\t\tNaN\n", "lat"},
		{"LatRange", "203.0.113.0/24\tDE\t\t\t\t\t\t95\t1\n", "latitude"},
		{"Lon", "203.0.113.0/24\tDE\t\t\t\t\t\t1\tInf\n", "lon"},
		{"Accuracy", "203.0.113.0/24\tDE\t\t\t\t\t\t1\t1\t70000\n", "accuracy_km"},
		{"Country", "203.0.113.0/24\tDEU\n", "country code"},
		{"ASN", "203.0.113.0/24\t\t\t\t\t\t\t\t\t\t\tAS1\n", "asn"},
		{"ASNZero", "203.0.113.0/24\t\t\t\t\t\t\t\t\t\t\t0\n", "asn"},
		{"OrgWithoutASN", "203.0.113.0/24\tDE\t\t\t\t\t\t\t\t\t\t\tOrg\n", "as_org without asn"},
		{"NoData", "203.0.113.0/24\n", "no data"},
		{"LongLine", "203.0.113.0/24\t" + strings.Repeat("x", 70<<10) + "\n", "longer than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := mmdb.ParseTable(strings.NewReader(tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ParseTable(%.40q) = %v, want error containing %q", tt.in, err, tt.want)
			}
		})
	}
}

func TestParseTableTooLarge(t *testing.T) {
	// Long comment lines are cheap to skip; the last row is cut by the limit.
	comment := "#" + strings.Repeat("x", 60<<10) + "\n"
	big := strings.Repeat(comment, mmdb.MaxTableBytes/len(comment)) + strings.Repeat("203.0.113.0/24\tDE\n", 8<<10)
	if _, err := mmdb.ParseTable(strings.NewReader(big)); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("ParseTable(%d bytes) = %v, want a size error", len(big), err)
	}
}

// FuzzParseTable checks that ParseTable never panics and that every table
// it accepts with distinct prefixes can be written as databases.
func FuzzParseTable(f *testing.F) {
	f.Add(table)                                        // the documented format
	f.Add("10.0.0.0/8\tKP\n")                           // short row
	f.Add("::/0\t\t\t\t\t\t\t\t\t\t\t1\n")              // ASN only, IPv6 default route
	f.Add("::ffff:192.0.2.0/120\tDE\n192.0.2.0/24\tFR") // mapped duplicate
	f.Add("\xff\xfe\t\t\n")                             // junk
	f.Fuzz(func(t *testing.T, in string) {
		tb, err := mmdb.ParseTable(strings.NewReader(in))
		if err != nil {
			return
		}
		for _, e := range tb.City {
			if !e.Prefix.IsValid() || e.Prefix != e.Prefix.Masked() {
				t.Fatalf("accepted unmasked or invalid prefix %v", e.Prefix)
			}
		}
		// Duplicate prefixes and aliased networks are legitimately refused
		// at write time; anything else must write.
		if err := mmdb.WriteCity(&bytes.Buffer{}, tb.City, build); err != nil &&
			!strings.Contains(err.Error(), "duplicate") && !strings.Contains(err.Error(), "inserting") {
			t.Fatalf("WriteCity(parsed %q): %v", in, err)
		}
	})
}
