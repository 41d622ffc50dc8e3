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
# `make demo ARGS=--keep`: make exports command-line variables to the
# recipe, so ARGS arrives here in the environment (used only when no
# arguments are given, so a Makefile passing $(ARGS) too is fine).
if [ $# -eq 0 ] && [ -n "${ARGS:-}" ]; then
	# shellcheck disable=SC2086
	set -- $ARGS
fi
exec ./bin/demo "$@"
