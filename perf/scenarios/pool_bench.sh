#!/usr/bin/env bash
# perf/scenarios/pool_bench.sh — one endpoint of four turns slow (+50 ms) halfway:
# client P99 before / during / after, for reflexd (P2C + EWMA, without and with
# hedging), nginx and HAProxy with their closest settings (docs/pool.md, issue 6).
#
# Usage: perf/scenarios/pool_bench.sh            (runnable by hand; make bench may call it)
# Environment:
#   BUILD=build  PHASE=5 (seconds per phase)  RATE=400 (requests/s, open loop)
#   CONNS=16  SLOW_MS=50  PORT_BASE=18640 (uses PORT_BASE .. PORT_BASE+5)
#   SYSTEMS="reflexd reflexd-hedge nginx haproxy"  KEEP=1 keeps the run directory
#
# Per system: the four origins run with --slow SLOW_MS (off); the load runs for PHASE
# seconds three times — before, after SIGUSR1 to origin 4 (slow on), after SIGUSR2
# (slow off) — each an open-loop reflex-bench run (coordinated-omission free) whose
# P99 is the cell. The proxy restarts between systems; the origins stay.
#
# Closest equivalents: nginx OSS has no latency-aware balancing: least_conn with
# max_fails/fail_timeout (passive health) and keep-alive. HAProxy: balance leastconn,
# http-reuse always, observe layer7 + error-limit for passive health. Neither hedges.
# Numbers on a shared 2-core VM are noisy: read the ratios, not the digits.
set -euo pipefail
cd "$(dirname "$0")/../.."
. perf/scenarios/lib.sh

BUILD=${BUILD:-build}
PHASE=${PHASE:-5}
RATE=${RATE:-400}
CONNS=${CONNS:-16}
SLOW_MS=${SLOW_MS:-50}
PORT_BASE=${PORT_BASE:-18640}
SYSTEMS=${SYSTEMS:-"reflexd reflexd-hedge nginx haproxy"}
PROXY_PORT=$PORT_BASE
O_PORTS=($((PORT_BASE + 1)) $((PORT_BASE + 2)) $((PORT_BASE + 3)) $((PORT_BASE + 4)))
PROXY_CPU=0
ORIGIN_CPU=1
LOAD_CPU=1

[ -x "$BUILD/reflexd" ] && [ -x "$BUILD/reflex-origin" ] && [ -x "$BUILD/reflex-bench" ] ||
	bench_die "build first: make build (needs $BUILD/reflexd, reflex-origin, reflex-bench)"
bench_init
require_free_ports "$PROXY_PORT" "${O_PORTS[@]}"

O_PIDS=()
for i in 0 1 2 3; do
	bench_start "origin$i" "$ORIGIN_CPU" "${O_PORTS[$i]}" "$BUILD/reflex-origin" \
		--listen "127.0.0.1:${O_PORTS[$i]}" --name "o$i" --slow "$SLOW_MS"
	O_PIDS+=("$START_PID")
done
SLOW_PID=${O_PIDS[3]}
N_ORIGINS=${#BENCH_PIDS[@]}

endpoints_yaml() {
	local e="" p
	for p in "${O_PORTS[@]}"; do e="$e\"127.0.0.1:$p\", "; done
	echo "[${e%, }]"
}

write_reflexd_conf() { # FILE HEDGE(0|1)
	{
		echo "workers: 1"
		echo "listen: [\"127.0.0.1:$PROXY_PORT\"]"
		echo "admin: {listen: off}"
		echo "log_level: warn"
		echo "pools:"
		echo "  default:"
		echo "    endpoints: $(endpoints_yaml)"
		echo "    balance: p2c"
		if [ "$2" = 1 ]; then
			echo "    hedge: {delay: p95, min_delay: 10ms}"
			echo "    retry: {attempts: 1, budget: 20%}"
		fi
	} >"$1"
}

write_nginx_conf() {
	mkdir -p "$RUN_DIR/nginx/tmp"
	{
		echo "worker_processes 1; pid nginx.pid; error_log error.log warn;"
		echo "events { worker_connections 4096; }"
		echo "http { access_log off; client_body_temp_path tmp/body; proxy_temp_path tmp/proxy;"
		echo "  fastcgi_temp_path tmp/fcgi; uwsgi_temp_path tmp/uwsgi; scgi_temp_path tmp/scgi;"
		echo "  upstream pool { least_conn;"
		for p in "${O_PORTS[@]}"; do echo "    server 127.0.0.1:$p max_fails=3 fail_timeout=5s;"; done
		echo "    keepalive 64; }"
		echo "  server { listen 127.0.0.1:$PROXY_PORT; proxy_http_version 1.1;"
		echo "    proxy_set_header Connection \"\";"
		echo "    proxy_next_upstream error timeout http_502 http_503 http_504;"
		echo "    location / { proxy_pass http://pool; } } }"
	} >"$RUN_DIR/nginx/nginx.conf"
}

write_haproxy_conf() {
	{
		echo "global"
		echo "    nbthread 1"
		echo "    maxconn 8000"
		echo "defaults"
		echo "    mode http"
		echo "    timeout connect 5s"
		echo "    timeout client 60s"
		echo "    timeout server 60s"
		echo "    option http-keep-alive"
		echo "frontend fe"
		echo "    bind 127.0.0.1:$PROXY_PORT"
		echo "    default_backend pool"
		echo "backend pool"
		echo "    balance leastconn"
		echo "    http-reuse always"
		echo "    retry-on conn-failure empty-response response-timeout"
		local i=0
		for p in "${O_PORTS[@]}"; do
			echo "    server o$i 127.0.0.1:$p observe layer7 error-limit 10 on-error mark-down"
			i=$((i + 1))
		done
	} >"$RUN_DIR/haproxy.cfg"
}

start_proxy() { # SYSTEM
	case $1 in
	reflexd | reflexd-hedge)
		write_reflexd_conf "$RUN_DIR/$1.yaml" "$([ "$1" = reflexd-hedge ] && echo 1 || echo 0)"
		bench_start "$1" "$PROXY_CPU" "$PROXY_PORT" "$BUILD/reflexd" --config "$RUN_DIR/$1.yaml"
		;;
	nginx)
		command -v nginx >/dev/null || return 1
		write_nginx_conf
		bench_start nginx "$PROXY_CPU" "$PROXY_PORT" nginx -p "$RUN_DIR/nginx/" -c nginx.conf \
			-g 'daemon off;'
		;;
	haproxy)
		command -v haproxy >/dev/null || return 1
		write_haproxy_conf
		bench_start haproxy "$PROXY_CPU" "$PROXY_PORT" haproxy -db -f "$RUN_DIR/haproxy.cfg"
		;;
	*) bench_die "unknown system $1" ;;
	esac
}

# Stop the proxy only (the origins were started first and stay).
stop_proxy() {
	local i
	for ((i = ${#BENCH_PIDS[@]} - 1; i >= N_ORIGINS; i--)); do
		kill -TERM "${BENCH_PIDS[$i]}" 2>/dev/null || true
		for _ in $(seq 50); do kill -0 "${BENCH_PIDS[$i]}" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "${BENCH_PIDS[$i]}" 2>/dev/null || true
		wait "${BENCH_PIDS[$i]}" 2>/dev/null || true
		unset 'BENCH_PIDS[$i]' 'BENCH_NAMES[$i]'
	done
	BENCH_PIDS=("${BENCH_PIDS[@]}")
	BENCH_NAMES=("${BENCH_NAMES[@]}")
}

phase() { # SYSTEM NAME → prints "p99_us errors"
	local out="$RUN_DIR/$1-$2.json"
	run_reflex_bench "$BUILD/reflex-bench" "$LOAD_CPU" "$out" "$PHASE" -R "$RATE" \
		-c "$CONNS" -d "$PHASE" -w 1 "http://127.0.0.1:$PROXY_PORT/?size=256" || true
	local p99 err
	p99=$(grep -o '"latency_us":{[^}]*}' "$out" | grep -o '"p99":[0-9.]*' | cut -d: -f2)
	err=$(grep -o '"errors":{[^}]*}' "$out" | grep -o '"total":[0-9]*' | cut -d: -f2)
	echo "${p99:-?} ${err:-?}"
}

declare -A RES
for sys in $SYSTEMS; do
	kill -USR2 "$SLOW_PID"
	if ! start_proxy "$sys"; then
		bench_log "$sys: not installed, skipped"
		RES[$sys]="- - - - - -"
		continue
	fi
	sleep 0.5
	read -r b_p99 b_err < <(phase "$sys" before)
	kill -USR1 "$SLOW_PID" # origin 4: +SLOW_MS from now
	read -r d_p99 d_err < <(phase "$sys" during)
	kill -USR2 "$SLOW_PID"
	read -r a_p99 a_err < <(phase "$sys" after)
	RES[$sys]="$b_p99 $d_p99 $a_p99 $b_err $d_err $a_err"
	bench_log "$sys: P99 before ${b_p99} µs, during ${d_p99} µs, after ${a_p99} µs"
	stop_proxy
done

echo
echo "## Pool: one of 4 endpoints +${SLOW_MS} ms halfway (open loop ${RATE} req/s, ${CONNS} connections, ${PHASE} s per phase)"
echo
echo "| system | P99 before | P99 during (1 slow) | P99 after | errors (b/d/a) |"
echo "|---|---|---|---|---|"
for sys in $SYSTEMS; do
	set -- ${RES[$sys]}
	fmt() { [ "$1" = "-" ] || [ "$1" = "?" ] && echo "$1" || awk -v v="$1" 'BEGIN { printf "%.2f ms", v / 1000 }'; }
	echo "| $sys | $(fmt "$1") | $(fmt "$2") | $(fmt "$3") | $4/$5/$6 |"
done
