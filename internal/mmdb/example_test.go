package mmdb_test

import (
	"fmt"
	"log"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/oschwald/geoip2-golang/v2"

	"github.com/originlens/originlens/internal/mmdb"
)

// Example builds a City and an ASN database from a text table, as the demo
// does, and reads them back with geoip2-golang.
func Example() {
	const tbl = "# documentation ranges placed in real cities\n" +
		"203.0.113.0/24\tDE\tGermany\tEU\tBE\tBerlin\tBerlin\t52.52\t13.405\t20\tEurope/Berlin\t64500\tExample Carrier GmbH\n" +
		"198.51.100.0/24\tKP\tNorth Korea\tAS\n"
	t, err := mmdb.ParseTable(strings.NewReader(tbl))
	if err != nil {
		log.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "mmdb-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	built := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	city, asn := filepath.Join(dir, "city.mmdb"), filepath.Join(dir, "asn.mmdb")
	if err := mmdb.WriteCityFile(city, t.City, built); err != nil {
		log.Fatal(err)
	}
	if err := mmdb.WriteASNFile(asn, t.ASN, built); err != nil {
		log.Fatal(err)
	}

	r, err := geoip2.Open(city)
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()
	for _, ip := range []string{"203.0.113.10", "198.51.100.7"} {
		c, err := r.City(netip.MustParseAddr(ip))
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(ip, c.Country.ISOCode, c.Country.Names.English, c.City.Names.English)
	}
	// Output:
	// 203.0.113.10 DE Germany Berlin
	// 198.51.100.7 KP North Korea
}
