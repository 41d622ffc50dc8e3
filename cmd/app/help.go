package main

import "github.com/originlens/originlens/internal/flagenv"

// command is the app's command line for --help and errors: its topics
// group the flags of parseConfig by name or prefix, so a flag added there
// lands in its topic (TestHelpGroups fails for one that lands in none).
var command = &flagenv.Command{
	Usage: "app [flags]",
	Intro: `The originlens TCP backend: learns each client's true address (socket or
PROXY protocol), locates it, applies the residency rules, answers it and
publishes one connection event per connection.

Every setting also reads the environment variable shown beside it
(APP_<NAME>, dashes as underscores); the command line wins. --version and
--help read the command line only. A bad value exits with status 2.`,
	Prefix:  envPrefix,
	CmdOnly: cmdOnly,
	Examples: map[string]string{
		"trusted-proxies":          "10.0.0.0/8,2001:db8::/32",
		"geoip-db":                 "/var/lib/GeoIP/GeoLite2-City.mmdb",
		"asn-db":                   "/var/lib/GeoIP/GeoLite2-ASN.mmdb",
		"policy":                   "/etc/originlens/policy.yaml",
		"max-conns-per-ip":         "100",
		"conn-rate-per-ip":         "20",
		"conn-burst-per-ip":        "40",
		"kafka-brokers":            "b-1.example:9092,b-2.example:9092",
		"kafka-replication-factor": "3",
		"kafka-username":           "ingest",
		"kafka-aws-region":         "eu-west-1",
		"spool-dir":                "/var/lib/originlens/spool",
	},
	Groups: []flagenv.Group{
		{Title: "Listening", Flags: []string{"listen*"}},
		{Title: "UDP", Flags: []string{"udp-*"}},
		{Title: "PROXY protocol", Flags: []string{"proxy-*", "trusted-proxies"}},
		{Title: "Relay", Flags: []string{"upstream*"}},
		{Title: "GeoIP and rules", Flags: []string{"geoip-*", "asn-db", "policy"}},
		{Title: "Limits and timeouts", Flags: []string{"max-*", "idle-timeout", "first-bytes-timeout", "drain-timeout", "conn-*", "limit-*"}},
		{Title: "Kafka", Flags: []string{"kafka-*"}},
		{Title: "Spool", Flags: []string{"queue-size", "spool-*"}},
		{Title: "Admin and logs", Flags: []string{"admin", "log-*", "version"}},
	},
}
