package main

import "github.com/originlens/originlens/internal/flagenv"

// command is the demo's command line for --help and errors.
var command = &flagenv.Command{
	Usage: "demo [flags]   (make demo, scripts/demo.sh)",
	Intro: `Runs the whole originlens pipeline on loopback: an embedded Kafka broker,
bin/app in trusted PROXY-protocol mode with a demo GeoIP database, bin/ingest
with its live heat map, and a traffic run of probes from many countries plus
spoof attempts the app must refuse; then prints what happened.

Every setting also reads the environment variable shown beside it
(DEMO_<NAME>, dashes as underscores; DEMO_KEEP=1 for --keep); the four
shared with deploy/compose also read the name after "or" (GEOIP_DB,
KAFKA_BROKERS, OPENSEARCH_URL, DASHBOARDS_URL). The command line wins.`,
	Prefix:  "DEMO_",
	CmdOnly: []string{"version"},
	EnvAlso: map[string]string{
		"geoip-db":       "GEOIP_DB",
		"kafka-brokers":  "KAFKA_BROKERS",
		"opensearch-url": "OPENSEARCH_URL",
		"dashboards-url": "DASHBOARDS_URL",
	},
	Examples: map[string]string{
		"geoip-db":       "/var/lib/GeoIP/GeoLite2-City.mmdb",
		"kafka-brokers":  "127.0.0.1:9092",
		"opensearch-url": "http://127.0.0.1:9200",
		"dashboards-url": "http://127.0.0.1:5601",
	},
	Groups: []flagenv.Group{
		{Title: "Programs and files", Flags: []string{"bin", "dir", "table", "geoip-db"}},
		{Title: "Kafka and OpenSearch", Flags: []string{"kafka-brokers", "opensearch-url", "dashboards-url"}},
		{Title: "Traffic", Flags: []string{"count", "spoofs", "concurrency", "wait"}},
		{Title: "Heat map and run", Flags: []string{"ui", "keep", "version"}},
	},
}
