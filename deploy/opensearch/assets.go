// Package opensearchassets holds the OpenSearch objects cmd/ingest installs
// before its first write: the composable index template for the connection
// event (dynamic: strict, ip and geo_point fields) and the ISM retention
// policy. They are plain JSON files next to this one so that operators can
// read and apply them with curl; the binary embeds them.
package opensearchassets

import _ "embed"

// IndexTemplate is the body of PUT _index_template/<name>. Its
// index_patterns are rewritten to the configured prefix at setup.
//
//go:embed index-template.json
var IndexTemplate []byte

// ISMPolicy is the body of PUT _plugins/_ism/policies/<id>. Its min_index_age
// and ism_template index_patterns are rewritten to the configured retention
// and prefix at setup.
//
//go:embed ism-policy.json
var ISMPolicy []byte
