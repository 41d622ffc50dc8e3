#!/usr/bin/env bash
# Refetches the vendored npm packages of the heat-map page at their pinned
# versions, checks their integrity against the registry's (npm pack does) and
# against the checksums below, and copies the files the page needs.
#
#   internal/heatmap/assets/update.sh          # refetch and verify
#
# To move to a new version: change the pins, run with UPDATE_SUMS=1, review
# the diff (files, LICENSE, NOTICE) and commit.
set -euo pipefail
cd "$(dirname "$0")"

WORLD_ATLAS=2.0.2
TOPOJSON_CLIENT=3.1.0

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

(cd "$tmp" && npm pack --silent "world-atlas@$WORLD_ATLAS" "topojson-client@$TOPOJSON_CLIENT" >/dev/null)
mkdir -p "$tmp/wa" "$tmp/tc"
tar xzf "$tmp/world-atlas-$WORLD_ATLAS.tgz" -C "$tmp/wa"
tar xzf "$tmp/topojson-client-$TOPOJSON_CLIENT.tgz" -C "$tmp/tc"

cp "$tmp/wa/package/countries-110m.json" countries-110m.json
cp "$tmp/wa/package/LICENSE" LICENSE.world-atlas
cp "$tmp/tc/package/dist/topojson-client.min.js" topojson-client.min.js
cp "$tmp/tc/package/LICENSE" LICENSE.topojson-client

if [ "${UPDATE_SUMS:-}" = 1 ]; then
	sha256sum countries-110m.json topojson-client.min.js >SHA256SUMS
fi
sha256sum -c SHA256SUMS
