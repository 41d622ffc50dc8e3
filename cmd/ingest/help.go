package main

import "github.com/originlens/originlens/internal/flagenv"

// groups are the topics of ingest's --help, by flag name or prefix; every
// flag of parseConfig must land in one (TestHelpGroups).
var groups = []flagenv.Group{
	{Title: "Kafka", Flags: []string{"kafka-*", "group", "dlq-topic"}},
	{Title: "OpenSearch", Flags: []string{"opensearch-*", "aws-sigv4*", "request-timeout"}},
	{Title: "Indices, template and dashboards", Flags: []string{"index-prefix", "template-name", "ism-policy", "retention", "no-setup", "dashboards-url", "map-backend-role"}},
	{Title: "Bulk indexing", Flags: []string{"bulk-*", "flush-interval", "max-inflight-bytes", "retry-max-backoff", "shutdown-grace"}},
	{Title: "Admin, heat map and logs", Flags: []string{"admin", "ui", "log-level", "version"}},
}

// examples are good values of the flags whose default is empty.
var examples = map[string]string{
	"kafka-brokers":      "b-1.example:9092,b-2.example:9092",
	"kafka-ca-file":      "/etc/ssl/kafka-ca.pem",
	"kafka-username":     "ingest",
	"kafka-aws-region":   "eu-west-1",
	"opensearch-url":     "https://localhost:9200",
	"opensearch-user":    "ingest",
	"aws-sigv4":          "eu-west-1",
	"opensearch-ca-file": "/etc/ssl/opensearch-ca.pem",
	"dashboards-url":     "http://localhost:5601",
}

const intro = `Every setting also reads the environment variable shown beside it
(INGEST_<NAME>, dashes as underscores); the command line wins. --version and
--help read the command line only. A bad value exits with status 2.`

// command is "ingest [flags]": consume until SIGTERM.
var command = &flagenv.Command{
	Usage: "ingest [flags]\ningest setup [flags]",
	Intro: `Consumes connection events from Kafka and bulk-indexes them into OpenSearch
daily indices, serving the live heat map on --ui. "ingest setup" installs the
index template, ISM policy and dashboards, then exits (ingest setup --help).

` + intro,
	Prefix:   "INGEST_",
	CmdOnly:  []string{"version"},
	Examples: examples,
	Groups:   groups,
}

// setupCommand is "ingest setup [flags]": the same flags; it needs
// --opensearch-url and no Kafka.
var setupCommand = &flagenv.Command{
	Usage: "ingest setup [flags]",
	Intro: `Installs the index template, the ISM retention policy and (with
--dashboards-url) the Dashboards saved objects, then exits. Needs
--opensearch-url; the Kafka flags are accepted and unused.

` + intro,
	Prefix:   "INGEST_",
	CmdOnly:  []string{"version"},
	Examples: examples,
	Groups:   groups,
}
