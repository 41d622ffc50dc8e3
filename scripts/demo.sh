#!/usr/bin/env bash
# Placeholder demo until the full pipeline lands: run the app on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "originlens app on 127.0.0.1:8080 (try: echo hello | nc 127.0.0.1 8080; Ctrl-C stops)"
exec ./bin/app --listen 127.0.0.1:8080 --admin 127.0.0.1:9090
