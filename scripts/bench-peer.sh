#!/usr/bin/env bash
# make bench-peer: the app against nginx stream + PROXY protocol + geoip2 on
# loopback (bench/peer; method and results in BENCHMARKS.md). It installs
# nothing: without nginx or its modules it says what to install and fails.
# Extra flags go to the benchmark, e.g.
#   BENCH_PEER_FLAGS='-rounds 5 -duration 30s -concurrency 64' make bench-peer
set -euo pipefail
cd "$(dirname "$0")/.."

modules=${NGINX_MODULES:-/usr/lib/nginx/modules}
missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=("nginx (package nginx-light)")
[ -f "$modules/ngx_stream_module.so" ] || missing+=("$modules/ngx_stream_module.so (package libnginx-mod-stream)")
[ -f "$modules/ngx_stream_geoip2_module.so" ] || missing+=("$modules/ngx_stream_geoip2_module.so (package libnginx-mod-stream-geoip2)")
if [ ${#missing[@]} -gt 0 ]; then
	echo "bench-peer: the peer is not installed; missing:" >&2
	printf '  %s\n' "${missing[@]}" >&2
	echo "install it with (Debian/Ubuntu, as root):" >&2
	echo "  apt-get install nginx-light libnginx-mod-stream libnginx-mod-stream-geoip2" >&2
	echo "(set NGINX_MODULES if the modules live elsewhere)" >&2
	exit 1
fi
[ -x bin/app ] || { echo "bench-peer: bin/app missing; run make build" >&2; exit 1; }

nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
mkdir -p bin
"${GO:-go}" build -o bin/bench-peer ./bench/peer
# shellcheck disable=SC2086
exec ./bin/bench-peer -app bin/app -nginx "$nginx_bin" -modules "$modules" ${BENCH_PEER_FLAGS:-} "$@"
