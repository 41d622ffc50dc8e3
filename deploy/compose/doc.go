// Package compose holds deploy/compose/compose.yaml, the Docker Compose file
// of the real servers for a local demo (Kafka in KRaft mode, OpenSearch,
// OpenSearch Dashboards), and the test that validates it. It has no Go API.
package compose
