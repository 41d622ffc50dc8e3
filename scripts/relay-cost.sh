#!/usr/bin/env bash
# relay-cost.sh: count what one relay spends per relayed connection, for a
# fixed number of connections, in bench-relay's topology (BENCHMARKS.md,
# "Relay: the app's own cost above Go's floor"). Root: it creates two
# network namespaces (client 198.51.100.10-41, server 198.51.100.1 with
# go-mmproxy's loopback routing) and deletes them on exit. It runs the
# upstream (bench-relay upstream), the relay under the chosen tool with
# GOMAXPROCS=1, drives exactly N connections through it with bench-relay's
# generator (32 workers, 32 sources), and prints the tool's totals over N.
#
#   scripts/relay-cost.sh callgrind app|go-floor [N]   # user-space instructions per connection
#   scripts/relay-cost.sh strace    app|go-floor [N]   # syscalls per connection (strace -c -f)
#   scripts/relay-cost.sh cpu       app|go-floor [N]   # utime+stime per connection from /proc
#   scripts/relay-cost.sh perf      app|go-floor [N]   # where CPU goes, kernel included (perf, cpu-clock)
#
# N defaults to 3000. APP (default bin/app) is the app binary; the app runs
# as bench-relay runs it (--upstream 127.0.0.1:9000 --proxy-protocol off,
# transparent, events to /dev/null).
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:?usage: relay-cost.sh callgrind|strace|cpu app|go-floor [N]}
relay=${2:?usage: relay-cost.sh callgrind|strace|cpu app|go-floor [N]}
n=${3:-3000}
app=$(realpath "${APP:-bin/app}")
tag=rc$$
cli=$tag-cli srv=$tag-srv
tmp=$(mktemp -d /tmp/relay-cost.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	ip netns del "$cli" 2>/dev/null || true
	ip netns del "$srv" 2>/dev/null || true
	[ -n "${KEEP:-}" ] && echo "kept $tmp" >&2 || rm -rf "$tmp"
}
trap cleanup EXIT
br="$tmp/bench-relay"
"${GO:-go}" build -o "$br" ./bench/relay
ip netns add "$cli"
ip netns add "$srv"
ip -n "$cli" link set lo up
ip -n "$srv" link set lo up
ip link add "c$tag" netns "$cli" type veth peer name "s$tag" netns "$srv"
ip -n "$cli" addr add 198.51.100.10/24 dev "c$tag"
for i in $(seq 11 41); do ip -n "$cli" addr add "198.51.100.$i/32" dev "c$tag"; done
ip -n "$srv" addr add 198.51.100.1/24 dev "s$tag"
ip -n "$cli" link set "c$tag" up
ip -n "$srv" link set "s$tag" up
ip -n "$srv" rule add from 127.0.0.1/8 iif lo table 123
ip -n "$srv" route add local 0.0.0.0/0 dev lo table 123
ip -n "$srv" -6 rule add from ::1/128 iif lo table 123
ip -n "$srv" -6 route add local ::/0 dev lo table 123
ip netns exec "$srv" "$br" upstream 127.0.0.1:9000 >/dev/null 2>&1 & pids+=($!)
case $relay in
app) cmd=("$app" --listen 198.51.100.1:8001 --admin "" --upstream 127.0.0.1:9000 --proxy-protocol off --log-level warn) ;;
go-floor) cmd=("$br" go-floor 198.51.100.1:8001 127.0.0.1:9000) ;;
*) echo "unknown relay $relay" >&2; exit 2 ;;
esac
case $mode in
strace) runner=(strace -c -f -o "$tmp/out") ;;
callgrind) runner=(valgrind --tool=callgrind --callgrind-out-file="$tmp/out" --dump-instr=no) ;;
cpu | perf) runner=() ;;
*) echo "unknown mode $mode" >&2; exit 2 ;;
esac
godebug=${GODEBUG:-}
# callgrind asserts on the runtime's asynchronous preemption signals
[ "$mode" != callgrind ] || godebug=asyncpreemptoff=1
ip netns exec "$srv" env -u GOMAXPROCS GOMAXPROCS=1 GODEBUG="$godebug" "${runner[@]}" "${cmd[@]}" >/dev/null 2>"$tmp/relay.log" & relay_pid=$!
pids+=("$relay_pid")
for _ in $(seq 600); do
	[ -n "$(ip netns exec "$srv" ss -Hltn 'sport = :8001')" ] && break
	sleep 0.1
done
[ -n "$(ip netns exec "$srv" ss -Hltn 'sport = :8001')" ] || { cat "$tmp/relay.log" >&2; exit 1; }
# the process that runs the relay (ip netns exec and env exec; strace forks it)
target_pid=$relay_pid
[ "$mode" != strace ] || target_pid=$(pgrep -P "$relay_pid" | head -1)
# warm-up: 200 connections, not counted
ip netns exec "$cli" "$br" load -target 198.51.100.1:8001 -max-conns 200 -duration 120s -sources 32 >/dev/null
[ "$mode" != callgrind ] || callgrind_control -z "$relay_pid" >/dev/null
cpu0=$(awk '{print $14+$15}' "/proc/$target_pid/stat")
flt0=$(awk '{print $10}' "/proc/$target_pid/stat")
ut0=$(awk '{print $14}' "/proc/$target_pid/stat")
# context switches of all its threads
ctxsw() { cat /proc/"$target_pid"/task/*/status | awk '/ctxt_switches/ {s+=$2} END {print s}'; }
cs0=$(ctxsw)
if [ "$mode" = perf ]; then # cpu-clock samples of user and kernel code, the load's whole length
	perf record -q -g -e cpu-clock -F 2000 -p "$target_pid" -o "$tmp/perf.data" 2>/dev/null & perf_pid=$!
	sleep 0.5
fi
ip netns exec "$cli" "$br" load -target 198.51.100.1:8001 -max-conns "$n" -duration 600s -sources 32 >"$tmp/load.json"
[ "$mode" != perf ] || { kill -INT "$perf_pid"; wait "$perf_pid" || true; }
cpu1=$(awk '{print $14+$15}' "/proc/$target_pid/stat")
flt1=$(awk '{print $10}' "/proc/$target_pid/stat")
ut1=$(awk '{print $14}' "/proc/$target_pid/stat")
cs1=$(ctxsw)
grep -q "\"conns\":$n,\"failed\":0" "$tmp/load.json" || { echo "load: $(cat "$tmp/load.json")" >&2; exit 1; }
case $mode in
callgrind)
	callgrind_control -d "$relay_pid" >/dev/null
	kill -KILL "$relay_pid"
	;;
*) kill -TERM "$target_pid" ;;
esac
wait "$relay_pid" 2>/dev/null || true
case $mode in
strace)
	# strace counts from the start: the warm-up's 200 connections too
	awk -v n="$((n + 200))" '/^ *[0-9]/ && NF>=5 && $NF != "total" {name=$NF; errs=(NF==6)?$5:0; printf "%-16s %8.2f per conn (%.2f failed, e.g. EAGAIN)\n", name, $4/n, errs/n}' "$tmp/out" | sort -k2 -nr | head -16
	awk -v n="$((n + 200))" '$NF == "total" {printf "total            %8.2f per conn\n", $4/n}' "$tmp/out"
	;;
callgrind)
	ir=$(cat "$tmp"/out.* | awk '/^summary:/ {s+=$2} END {print s}')
	echo "$relay: instructions: $ir total, $((ir / n)) per connection ($n connections after 200 warm-up)"
	callgrind_annotate "$tmp"/out.* 2>/dev/null | awk -v n="$n" '/^ *[0-9,]+ +\(/ && /:/ {x=$1; gsub(",","",x); $1=""; $2=""; printf "%8d %s\n", x/n, $0}' | head -"${TOP:-30}"
	;;
perf)
	# µs of CPU per connection by symbol (cpu-clock samples at 2000 Hz)
	perf report -i "$tmp/perf.data" --no-children -g none -n --sort sym --stdio 2>/dev/null |
		awk -v n="$n" '/^ +[0-9.]+%/ {us=$2/2000/n*1e6; $1=""; $2=""; t+=us; printf "%7.2f %s\n", us, $0} END {printf "%7.2f total\n", t}' | sort -nr >"$tmp/perf.txt"
	[ -z "${PERF_OUT:-}" ] || cp "$tmp/perf.txt" "$PERF_OUT"
	head -"${TOP:-30}" "$tmp/perf.txt"
	# the same with callees included (frame pointers), for the app's own steps
	total=$(awk '$2 == "total" {print $1}' "$tmp/perf.txt")
	perf report -i "$tmp/perf.data" --children -g none -n --sort sym --stdio 2>/dev/null |
		awk -v t="$total" '/^ +[0-9.]+% +[0-9.]+%/ {us=$1/100*t; $1=""; $2=""; $3=""; printf "%7.2f %s\n", us, $0}' >"$tmp/perf-children.txt"
	[ -z "${PERF_OUT:-}" ] || cp "$tmp/perf-children.txt" "$PERF_OUT.children"
	grep -E "${PERF_GREP:-server\.|relay\.|sink\.|event\.|Deadline|context\.|runtime\.gcBgMarkWorker|runtime\.mallocgc$|runtime\.newproc|CloseWrite|Accept|\(\*conn\)\.Close}" "$tmp/perf-children.txt" | head -40
	;;
cpu)
	tck=$(getconf CLK_TCK)
	awk -v a="$cpu0" -v b="$cpu1" -v n="$n" -v t="$tck" 'BEGIN {printf "%s: CPU %.1f us per connection\n", "'"$relay"'", (b-a)/t/n*1e6}'
	awk -v a="$ut0" -v b="$ut1" -v n="$n" -v t="$tck" 'BEGIN {printf "  of which user %.1f us\n", (b-a)/t/n*1e6}'
	awk -v a="$cs0" -v b="$cs1" -v n="$n" 'BEGIN {printf "  context switches %.2f per connection (live threads)\n", (b-a)/n}'
	awk -v a="$flt0" -v b="$flt1" -v n="$n" 'BEGIN {printf "  minor page faults %.3f per connection\n", (b-a)/n}'
	;;
esac
