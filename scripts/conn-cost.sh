#!/usr/bin/env bash
# conn-cost.sh: count what the app spends per connection for a fixed number
# of connections, in ways that survive a loaded machine (BENCHMARKS.md,
# "Per-connection cost"). It starts a kfake broker (bench-peer broker), the
# app with the bench-peer settings under the chosen tool, drives N
# connections with bench-peer's generator (bench-peer load), stops the app
# with SIGTERM and prints the tool's totals divided by N.
#
#   scripts/conn-cost.sh strace    [APP] [N]   # syscalls per connection (strace -c -f)
#   scripts/conn-cost.sh callgrind [APP] [N]   # instructions per connection (valgrind)
#   scripts/conn-cost.sh cpu       [APP] [N]   # utime+stime per connection from /proc
#   scripts/conn-cost.sh mem       [APP] [N]   # RSS (file/anon, peak) and bytes allocated per connection
#
# APP defaults to bin/app, N to 5000 (callgrind: 2000). Extra app flags:
# APP_EXTRA='--defer-accept 5s'.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:?usage: conn-cost.sh strace|callgrind|cpu [APP] [N]}
app=$(realpath "${2:-bin/app}")
n=${3:-}
[ -n "$n" ] || { [ "$mode" = callgrind ] && n=2000 || n=5000; }
tmp=$(mktemp -d /tmp/conn-cost.XXXXXX)
trap 'kill "$brk_pid" 2>/dev/null || true; [ -n "${KEEP:-}" ] && echo "kept $tmp" >&2 || rm -rf "$tmp"' EXIT
bp="$tmp/bench-peer"
"${GO:-go}" build -o "$bp" ./bench/peer
"$bp" citydb "$tmp/city.mmdb"
mkfifo "$tmp/brk.in"
"$bp" broker <"$tmp/brk.in" >"$tmp/brk.out" 2>&1 & brk_pid=$!
exec 3>"$tmp/brk.in" # the broker serves until this closes
for _ in $(seq 100); do [ -s "$tmp/brk.out" ] && break; sleep 0.1; done
brokers=$(head -1 "$tmp/brk.out")
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
admin=$(free_port)
args=(--listen "127.0.0.1:$port" --admin "127.0.0.1:$admin" --proxy-protocol trusted
	--trusted-proxies 127.0.0.0/8 --geoip-db "$tmp/city.mmdb" --kafka-brokers "$brokers" --spool-dir "$tmp/spool" --log-level warn ${APP_EXTRA:-})
case $mode in
strace) runner=(strace ${STRACE_OPTS:--c} -f -o "$tmp/out") ;;
callgrind) runner=(valgrind --tool=callgrind --callgrind-out-file="$tmp/out" --dump-instr=no) ;;
cpu | mem) runner=() ;;
*) echo "unknown mode $mode" >&2; exit 2 ;;
esac
godebug=${GODEBUG:-}
# callgrind asserts on the runtime's asynchronous preemption signals
[ "$mode" != callgrind ] || godebug=asyncpreemptoff=1
env -u GOMAXPROCS GOMAXPROCS=1 GODEBUG="$godebug" "${runner[@]}" "$app" "${args[@]}" >"$tmp/app.log" 2>&1 & app_pid=$!
for _ in $(seq 300); do
	curl -fsS "http://127.0.0.1:$admin/readyz" >/dev/null 2>&1 && break
	sleep 0.2
done
target_pid=$(pgrep -P "$app_pid" | head -1 || true)
[ "$mode" != cpu ] && [ -n "$target_pid" ] || target_pid=$app_pid
# callgrind: count the connections only, not the start
[ "$mode" != callgrind ] || callgrind_control -z "$app_pid" >/dev/null
cpu0=$(awk '{print $14+$15}' "/proc/$target_pid/stat")
# the Go runtime's counters: bytes and objects allocated, GC cycles
gostats() { curl -fsS "http://127.0.0.1:$admin/metrics" | awk '/^go_memstats_alloc_bytes_total/ {a=$2} /^go_memstats_mallocs_total/ {m=$2} /^go_gc_duration_seconds_count/ {g=$2} END {printf "%d %d %d", a, m, g}'; }
rss() { awk '/^(VmHWM|VmRSS|RssAnon|RssFile):/ {printf "%s %.1f MiB  ", $1, $2/1024}' "/proc/$target_pid/status"; }
if [ "$mode" = mem ]; then echo "ready: $(rss)"; go0=$(gostats); fi
"$bp" load -target "127.0.0.1:$port" -n "$n" -concurrency "${CONC:-32}"
cpu1=$(awk '{print $14+$15}' "/proc/$target_pid/stat")
if [ "$mode" = mem ]; then
	echo "after: $(rss)"
	echo "$go0 $(gostats)" | awk -v n="$n" '{printf "per connection: %.0f B allocated, %.1f allocations; %d GC cycles\n", ($4-$1)/n, ($5-$2)/n, $6-$3}'
fi
if [ "$mode" = callgrind ]; then
	# callgrind dies on the signal that SIGTERM's handling raises: dump
	# the counts first (a second file, out.N), then stop it
	callgrind_control -d "$app_pid" >/dev/null
	kill -KILL "$app_pid"
else
	kill -TERM "$target_pid" # the app (under strace: its child)
fi
wait "$app_pid" || true
tck=$(getconf CLK_TCK)
case $mode in
strace)
	if [ -n "${STRACE_OPTS:-}" ]; then # a trace, not counts: the last connections' calls
		grep -Ev 'futex|nanosleep|epoll_pwait|sigreturn|SIGURG|getpid|tgkill|sched_yield' "$tmp/out" | tail -"${TAIL:-40}"
		exit 0
	fi
	awk -v n="$n" '/^ *[0-9]/ && NF>=5 {name=$NF; errs=(NF==6)?$5:0; printf "%-16s %8.2f per conn (%.2f failed, e.g. EAGAIN)\n", name, $4/n, errs/n}' "$tmp/out" | sort -k2 -nr | head -12
	;;
callgrind)
	ir=$(cat "$tmp"/out.* | awk '/^summary:/ {s+=$2} END {print s}')
	echo "instructions: $ir total, $(( ir / n )) per connection (counted from readiness to the end of the load)"
	# the functions with the most instructions of their own, per connection
	callgrind_annotate "$tmp"/out.* 2>/dev/null | awk -v n="$n" '/^ *[0-9,]+ +\(/ && /:/ {x=$1; gsub(",","",x); $1=""; $2=""; printf "%8d %s\n", x/n, $0}' | head -"${TOP:-25}"
	;;
cpu)
	awk -v a="$cpu0" -v b="$cpu1" -v n="$n" -v t="$tck" 'BEGIN{printf "app CPU %.3f s for %d conns: %.1f us per connection (%.3f s/10k)\n", (b-a)/t, n, (b-a)/t/n*1e6, (b-a)/t/n*1e4}'
	;;
esac
