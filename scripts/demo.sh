#!/usr/bin/env bash
# The local demo: runs bin/demo (cmd/demo), which starts an embedded Kafka
# broker, bin/app, bin/ingest and a traffic run on loopback, prints a
# summary and stops everything. Arguments and DEMO_* / GEOIP_DB /
# KAFKA_BROKERS / OPENSEARCH_URL / DASHBOARDS_URL variables are passed on:
#   scripts/demo.sh --keep        # keep everything running until Ctrl-C
#   scripts/demo.sh --help        # every option
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x bin/demo ] || [ ! -x bin/app ] || [ ! -x bin/devkafka ]; then
	make build
fi
# ARGS lets `make demo ARGS=--keep` pass options through the Makefile.
# shellcheck disable=SC2086
exec ./bin/demo ${ARGS:-} "$@"
