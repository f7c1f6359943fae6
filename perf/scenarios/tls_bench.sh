#!/usr/bin/env bash
# perf/scenarios/tls_bench.sh — TLS termination, reflexd vs nginx (issue 10).
#
#   perf/scenarios/tls_bench.sh [BUILD_DIR]        (default build/; docs/tls.md)
#
# Both proxies terminate TLS with the same ECDSA P-256 certificate (made here
# with the openssl CLI), one worker each, pinned to PROXY_CPU, in front of one
# reflex-origin (plain HTTP, keep-alive) on ORIGIN_CPU; wrk (which speaks
# https) runs on LOAD_CPU. Two measurements per server:
#   handshakes  wrk -H "Connection: close": every request is a new TCP
#               connection and a full TLS handshake (wrk keeps no sessions)
#   keepalive   wrk over kept-alive TLS connections: requests/s
# Same TLS settings on both sides: TLS 1.2/1.3, Mozilla intermediate suites,
# session tickets on (not used by wrk). Prints one Markdown table.
#
# Environment: DUR (s per run, default 5), WARM (s, default 1), CONNS (50),
# PROXY_CPU (0), LOAD_CPU (1), ORIGIN_CPU (1), BODY (origin path, /pass/1k),
# MODES ("handshakes keepalive"; either alone to run one), SERVERS ("reflexd
# nginx"), PERF_DIR (if set: `perf record -g` of each proxy during its
# measured run, into PERF_DIR/MODE-SERVER.data; the CPU figure then includes
# perf's own sampling overhead, a few percent, on both sides alike).
# make bench calls this script (perf/scenarios/bench.sh); it also runs alone.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:-build}
. perf/scenarios/lib.sh

DUR=${DUR:-5}
WARM=${WARM:-1}
CONNS=${CONNS:-50}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
ORIGIN_CPU=${ORIGIN_CPU:-1}
BODY=${BODY:-/pass/1k?cc=no-store}
MODES=${MODES:-handshakes keepalive}
SERVERS=${SERVERS:-reflexd nginx}
PERF_DIR=${PERF_DIR:-}

for b in reflexd reflex-origin; do
	[ -x "$BUILD/$b" ] || bench_die "$BUILD/$b is missing: make $BUILD/$b"
done
for p in wrk openssl nginx; do
	command -v "$p" >/dev/null || bench_die "$p is not installed (make deps)"
done

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

bench_init
ORIGIN_PORT=$(free_port)
RX_PORT=$(free_port)
NG_PORT=$(free_port)

# One certificate for both: ECDSA P-256, self-signed (wrk does not verify).
openssl ecparam -name prime256v1 -genkey -noout -out "$RUN_DIR/key.pem" 2>/dev/null
openssl req -x509 -new -key "$RUN_DIR/key.pem" -subj /CN=localhost -days 2 \
	-addext subjectAltName=DNS:localhost,IP:127.0.0.1 -out "$RUN_DIR/cert.pem" 2>/dev/null

bench_start origin "$ORIGIN_CPU" "$ORIGIN_PORT" \
	"$BUILD/reflex-origin" --listen "127.0.0.1:$ORIGIN_PORT" --name origin

cat >"$RUN_DIR/reflexd.yaml" <<YAML
workers: 1
listen:
  - {address: "127.0.0.1:$RX_PORT", tls: {cert: $RUN_DIR/cert.pem, key: $RUN_DIR/key.pem}}
upstream: ["127.0.0.1:$ORIGIN_PORT"]
admin: {listen: off}
log_level: warn
YAML
bench_start reflexd "$PROXY_CPU" "$RX_PORT" "$BUILD/reflexd" --config "$RUN_DIR/reflexd.yaml"
RX_PID=$START_PID

mkdir -p "$RUN_DIR/nginx/tmp"
cat >"$RUN_DIR/nginx/nginx-tls.conf" <<NGINX
worker_processes 1;
pid nginx.pid;
error_log error.log warn;
worker_rlimit_nofile 16384;
events { worker_connections 8192; }
http {
    access_log off;
    client_body_temp_path tmp/body; proxy_temp_path tmp/proxy; fastcgi_temp_path tmp/fcgi;
    uwsgi_temp_path tmp/uwsgi; scgi_temp_path tmp/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    upstream origin {
        server 127.0.0.1:$ORIGIN_PORT;
        keepalive 128;
        keepalive_requests 100000000;
    }
    server {
        listen 127.0.0.1:$NG_PORT ssl backlog=4096;
        ssl_certificate $RUN_DIR/cert.pem;
        ssl_certificate_key $RUN_DIR/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305;
        ssl_prefer_server_ciphers off;
        ssl_session_cache shared:SSL:10m;
        ssl_session_timeout 1d;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        location / { proxy_pass http://origin; }
    }
}
NGINX
bench_start nginx "$PROXY_CPU" "$NG_PORT" nginx -p "$RUN_DIR/nginx/" -c nginx-tls.conf -g 'daemon off;'
NG_PID=$START_PID

for port in "$RX_PORT" "$NG_PORT"; do
	code=$(curl -sk -m 5 -o /dev/null -w '%{http_code}' "https://127.0.0.1:$port$BODY") || true
	[ "$code" = 200 ] || bench_die "https://127.0.0.1:$port$BODY answered '$code'"
done

declare -A RPS P50 P99 ERR CPU_US
for mode in $MODES; do
	hdr=
	[ "$mode" = handshakes ] && hdr="Connection: close"
	for srv in $SERVERS; do
		port=$RX_PORT pid=$RX_PID
		[ "$srv" = nginx ] && port=$NG_PORT pid=$NG_PID
		url="https://127.0.0.1:$port$BODY"
		bench_log "$mode: $srv (wrk -t1 -c$CONNS, ${DUR}s)"
		run_wrk "$LOAD_CPU" "$CONNS" "$WARM" "$url" "$RUN_DIR/warm.txt" "$hdr" || true
		perf_pid=
		if [ -n "$PERF_DIR" ]; then
			mkdir -p "$PERF_DIR"
			perf record -q -g -p "$(proc_tree "$pid" | paste -sd,)" -o "$PERF_DIR/$mode-$srv.data" -- sleep "$DUR" \
				>/dev/null 2>&1 &
			perf_pid=$!
		fi
		t0=$(tree_ticks "$pid")
		run_wrk "$LOAD_CPU" "$CONNS" "$DUR" "$url" "$RUN_DIR/$mode-$srv.txt" "$hdr" ||
			bench_die "wrk failed: $(tail -3 "$RUN_DIR/$mode-$srv.txt")"
		t1=$(tree_ticks "$pid")
		[ -z "$perf_pid" ] || wait "$perf_pid" || true
		read -r rps p50 _ p99 n err < <(wrk_parse "$RUN_DIR/$mode-$srv.txt")
		RPS[$mode-$srv]=$rps P50[$mode-$srv]=$p50 P99[$mode-$srv]=$p99 ERR[$mode-$srv]=$err
		# the proxy's own CPU per request: the fair figure when wrk (which
		# pays for a handshake too) or a busy machine is the limit
		CPU_US[$mode-$srv]=$(awk -v t=$((t1 - t0)) -v n="$n" -v hz="$CLK_TCK" \
			'BEGIN { printf "%.0f", (n > 0) ? t * 1e6 / hz / n : 0 }')
	done
done

echo
echo "## TLS termination: reflexd vs nginx"
echo
echo "ECDSA P-256 certificate, one worker each on CPU $PROXY_CPU; wrk -t1 -c$CONNS on CPU $LOAD_CPU;"
echo "origin (reflex-origin) on CPU $ORIGIN_CPU; body $BODY; ${DUR}s per run. $(version_of nginx), $(version_of wrk), $(openssl version)."
echo
echo "| measurement | server | req/s | P50 | P99 | errors | ratio vs nginx | proxy CPU per request |"
echo "|---|---|---|---|---|---|---|---|"
for mode in $MODES; do
	for srv in $SERVERS; do
		k=$mode-$srv
		ratio=$(awk -v a="${RPS[$k]}" -v b="${RPS[$mode-nginx]:-0}" 'BEGIN { printf "%.2f", (b > 0) ? a / b : 0 }')
		label="full handshakes/s (Connection: close)"
		[ "$mode" = keepalive ] && label="keep-alive req/s"
		echo "| $label | $srv | $(fmt_int "${RPS[$k]}") | $(fmt_us "${P50[$k]}") | $(fmt_us "${P99[$k]}") | ${ERR[$k]} | $ratio | ${CPU_US[$k]} us |"
	done
done
echo
echo "Targets (issue 10): handshakes/s within 10% of nginx; keep-alive req/s at least 1.3x nginx."
echo "req/s is closed-loop wrk on a shared core: when wrk (which does a handshake per request"
echo "too) is the limit, compare the proxies by their CPU per request."

