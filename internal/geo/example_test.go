package geo_test

import (
	"fmt"
	"log"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/originlens/originlens/internal/geo"
	"github.com/originlens/originlens/internal/mmdb"
)

func ExampleDB_Lookup() {
	dir, err := os.MkdirTemp("", "geo-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	// A City database that places a documentation range in Berlin.
	path := filepath.Join(dir, "city.mmdb")
	err = mmdb.WriteCityFile(path, []mmdb.Entry{{
		Prefix:     netip.MustParsePrefix("203.0.113.0/24"),
		CountryISO: "DE", CountryName: "Germany", ContinentCode: "EU",
		City: "Berlin", Lat: 52.52, Lon: 13.405, TimeZone: "Europe/Berlin",
	}}, time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC))
	if err != nil {
		log.Fatal(err)
	}

	db, err := geo.Open(geo.Config{CityPath: path})
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()

	for _, ip := range []string{"203.0.113.50", "::ffff:203.0.113.50", "198.51.100.1", "10.0.0.1", "127.0.0.1"} {
		loc := db.Lookup(netip.MustParseAddr(ip))
		fmt.Printf("%s class=%s country=%q city=%q\n", ip, loc.Class, loc.CountryISO, loc.City)
	}
	// Output:
	// 203.0.113.50 class=public country="DE" city="Berlin"
	// ::ffff:203.0.113.50 class=public country="DE" city="Berlin"
	// 198.51.100.1 class=documentation country="" city=""
	// 10.0.0.1 class=private country="" city=""
	// 127.0.0.1 class=loopback country="" city=""
}
