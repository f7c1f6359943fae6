# perf/scenarios/lib.sh — helpers shared by the benchmark scenarios (sourced, not run).
# shellcheck shell=bash
#
# Contract: a scenario sources this file, calls bench_init once (it creates
# $RUN_DIR and installs the EXIT/INT/TERM trap), starts its servers with
# bench_start (which records every PID), and everything started is stopped by
# PID on exit: TERM, then KILL after 5 s. Nothing here kills by name.
#
# Time is measured in kernel clock ticks read from /proc/PID/stat (utime+stime
# of a process and its descendants); "share of a core" = ticks / (CLK_TCK * s).

CLK_TCK=$(getconf CLK_TCK)
BENCH_PIDS=()
BENCH_NAMES=()
RUN_DIR=

bench_log() { printf '[bench %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
# bench_die MESSAGE: stop the run; the run directory (server logs, raw output) is kept.
bench_die() {
	bench_log "error: $*"
	KEEP=1
	exit 1
}

# bench_init: run directory and the cleanup trap. KEEP=1 keeps the run dir.
bench_init() {
	RUN_DIR=$(mktemp -d /tmp/reflex-bench.XXXXXX) || bench_die "mktemp failed"
	trap bench_cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
}

# bench_stop_all: stop everything bench_start started, newest first (the proxies stop
# before the origin they drain towards): TERM, then KILL after 5 s.
bench_stop_all() {
	local pid i alive
	for ((i = ${#BENCH_PIDS[@]} - 1; i >= 0; i--)); do
		kill -TERM "${BENCH_PIDS[$i]}" 2>/dev/null || true
	done
	for i in $(seq 50); do
		alive=0
		for pid in "${BENCH_PIDS[@]}"; do
			kill -0 "$pid" 2>/dev/null && alive=1
		done
		[ $alive -eq 0 ] && break
		sleep 0.1
	done
	for i in "${!BENCH_PIDS[@]}"; do
		kill -KILL "${BENCH_PIDS[$i]}" 2>/dev/null &&
			bench_log "killed ${BENCH_NAMES[$i]} (pid ${BENCH_PIDS[$i]}): it did not stop within 5 s of SIGTERM"
	done
	wait 2>/dev/null || true
	BENCH_PIDS=()
	BENCH_NAMES=()
}

bench_cleanup() {
	bench_stop_all
	if [ -n "$RUN_DIR" ] && [ -d "$RUN_DIR" ]; then
		if [ "${KEEP:-0}" = 1 ]; then
			bench_log "run directory kept: $RUN_DIR"
		else
			rm -rf "$RUN_DIR"
		fi
	fi
	return 0
}

# port_in_use PORT: true if something listens on 127.0.0.1:PORT or *:PORT (TCP).
port_in_use() {
	[ -n "$(ss -Htln "sport = :$1" 2>/dev/null)" ]
}

# require_free_ports PORT...: refuse to run if any port is taken.
require_free_ports() {
	local p
	for p in "$@"; do
		port_in_use "$p" && bench_die "port $p is already in use; set the *_PORT variables"
	done
	return 0
}

# wait_port PORT SECONDS PID: wait until PORT listens; fail if PID died first.
wait_port() {
	local port=$1 tmo=$2 pid=$3 i
	for i in $(seq $((tmo * 20))); do
		port_in_use "$port" && return 0
		kill -0 "$pid" 2>/dev/null || return 1
		sleep 0.05
	done
	return 1
}

# bench_start NAME CPU PORT cmd...: start cmd in the background pinned to CPU
# (the whole process and every thread it creates), log in $RUN_DIR/NAME.log,
# wait for PORT to listen. Sets START_PID.
bench_start() {
	local name=$1 cpu=$2 port=$3
	shift 3
	taskset -c "$cpu" "$@" >"$RUN_DIR/$name.log" 2>&1 &
	START_PID=$!
	BENCH_PIDS+=("$START_PID")
	BENCH_NAMES+=("$name")
	if ! wait_port "$port" 10 "$START_PID"; then
		sed 's/^/    /' "$RUN_DIR/$name.log" >&2
		bench_die "$name did not come up on port $port"
	fi
	bench_log "$name up: pid $START_PID, port $port, cpu $cpu"
}

# proc_tree PID: PID and all its descendants, one a line.
proc_tree() {
	local pid=$1 c
	echo "$pid"
	for c in $(cat /proc/"$pid"/task/*/children 2>/dev/null); do
		proc_tree "$c"
	done
}

# tree_ticks PID: utime+stime of PID and its live descendants, in ticks.
# (Fields 14 and 15 of /proc/PID/stat; the comm field may contain spaces, so
# cut after the last ')'.)
tree_ticks() {
	local total=0 p s
	for p in $(proc_tree "$1"); do
		s=$(cat /proc/"$p"/stat 2>/dev/null) || continue
		s=${s##*) }
		set -- $s
		total=$((total + ${12} + ${13}))
	done
	echo "$total"
}

# busy_ticks: CPU time used by everything on the machine, all CPUs, in ticks
# (user+nice+system+irq+softirq+steal of the "cpu" line of /proc/stat).
busy_ticks() {
	awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat
}

# core_ticks CPU: busy time of one CPU in ticks, whoever used it (same fields as busy_ticks,
# from the "cpuN" line). On loopback a sender's core also runs the receiver's TCP work in
# softirq, which no process is charged for in full: only the core's own count says it is full.
core_ticks() {
	awk -v c="cpu$1" '$1 == c { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat
}

# pct TICKS SECONDS: share of one core in percent (integer).
pct() {
	awk -v t="$1" -v s="$2" -v hz="$CLK_TCK" 'BEGIN { printf "%d", (s > 0) ? 100 * t / (hz * s) + 0.5 : 0 }'
}

# now_s: monotonic-enough wall clock in seconds with ns resolution.
now_s() { date +%s.%N; }

# run_wrk CPU CONNS SECONDS URL OUT [HEADER]: closed-loop wrk run pinned to CPU. The
# output goes to OUT, wrk's own CPU ticks (user+sys, reaped child) to OUT.ticks.
# The shell that waits for wrk reads its own cutime/cstime afterwards: that is
# exactly wrk's CPU time.
run_wrk() {
	local cpu=$1 conns=$2 secs=$3 url=$4 out=$5 hdr=${6:-}
	timeout $((secs + 30)) sh -c '
		out=$5
		if [ -n "$6" ]; then
			taskset -c "$1" wrk -t1 -c"$2" -d"$3"s --latency --timeout 5s -H "$6" "$4" >"$out" 2>&1
		else
			taskset -c "$1" wrk -t1 -c"$2" -d"$3"s --latency --timeout 5s "$4" >"$out" 2>&1
		fi
		rc=$?
		s=$(cat /proc/$$/stat); s=${s##*) }; set -- $s
		echo $((${14} + ${15})) >"$out.ticks"
		exit $rc' sh "$cpu" "$conns" "$secs" "$url" "$out" "$hdr"
}

# run_reflex_bench BIN CPU OUT MAXSECS ARGS...: reflex-bench --json ARGS pinned to CPU,
# output to OUT, its CPU ticks to OUT.ticks (as run_wrk); killed after MAXSECS + 30 s.
run_reflex_bench() {
	local bin=$1 cpu=$2 out=$3 maxs=$4
	shift 4
	timeout $((${maxs%.*} + 30)) sh -c '
		out=$1 cpu=$2; shift 2
		taskset -c "$cpu" "$@" >"$out" 2>&1
		rc=$?
		s=$(cat /proc/$$/stat); s=${s##*) }; set -- $s
		echo $((${14} + ${15})) >"$out.ticks"
		exit $rc' sh "$out" "$cpu" "$bin" --json "$@"
}

# json_num FILE KEY: the first number named KEY in reflex-bench's JSON (latency_us
# comes before latency_uncorrected_us, so pNN are the corrected ones).
json_num() {
	grep -o "\"$2\":[0-9.]*" "$1" | head -1 | cut -d: -f2
}

# wrk_parse FILE: prints "rps p50_us p90_us p99_us requests errors" from wrk
# --latency output. errors = socket errors (connect+read+write+timeout) plus
# non-2xx/3xx responses.
wrk_parse() {
	awk '
	function us(v) {
		if (v ~ /us$/) return v + 0
		if (v ~ /ms$/) return (substr(v, 1, length(v) - 2) + 0) * 1000
		if (v ~ /m$/) return (substr(v, 1, length(v) - 1) + 0) * 60e6
		if (v ~ /s$/) return (substr(v, 1, length(v) - 1) + 0) * 1e6
		return v + 0
	}
	/^ *50%/ { p50 = us($2) }
	/^ *90%/ { p90 = us($2) }
	/^ *99%/ { p99 = us($2) }
	/^Requests\/sec:/ { rps = $2 }
	/requests in/ { n = $1 }
	/Socket errors:/ { gsub(",", ""); err += $4 + $6 + $8 + $10 }
	/Non-2xx or 3xx responses:/ { err += $5 }
	END { printf "%.0f %.0f %.0f %.0f %d %d\n", rps, p50, p90, p99, n, err }' "$1"
}

# median V...: median of numbers (the middle one; mean of the two middle ones).
median() {
	printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
		if (NR == 0) { print 0; exit }
		if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# spread V...: (max - min) / median in percent.
spread() {
	local m
	m=$(median "$@")
	printf '%s\n' "$@" | sort -g | awk -v m="$m" 'NR == 1 { lo = $1 } { hi = $1 }
		END { printf "%.1f%%", (m > 0) ? 100 * (hi - lo) / m : 0 }'
}

# fmt_int N: 88518 -> 88,518
fmt_int() {
	awk -v n="$1" 'BEGIN { n = sprintf("%.0f", n); s = "";
		while (length(n) > 3) { s = "," substr(n, length(n) - 2) s; n = substr(n, 1, length(n) - 3) }
		print n s }'
}

# fmt_us US: microseconds in a readable unit (us below 1 ms, else ms with two decimals).
fmt_us() {
	awk -v u="$1" 'BEGIN { if (u < 1000) printf "%d us\n", u + 0.5; else if (u < 1e6) printf "%.2f ms\n", u / 1000; else printf "%.2f s\n", u / 1e6 }'
}

# http_get URL OUT: GET URL, body to OUT, headers to OUT.hdr; prints "CODE BYTES".
http_get() {
	curl -s -m 5 -o "$2" -D "$2.hdr" -w '%{http_code} %{size_download}\n' "$1"
}

# reflex_origin_requests PORT: requests served by reflex-origin (its /__stats).
reflex_origin_requests() {
	curl -s -m 5 "http://127.0.0.1:$1/__stats" | sed -n 's/.*"requests":[[:space:]]*\([0-9]*\).*/\1/p'
}

# nginx_status_requests PORT PATH: the "requests" counter of nginx stub_status.
nginx_status_requests() {
	curl -s -m 5 "http://127.0.0.1:$1$2" | awk 'NR == 3 { print $3 }'
}

# pkg_version PKG: the installed Debian version of PKG, or "not installed".
pkg_version() {
	dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo "not installed"
}

# version_of PROGRAM: a one-line version string of an installed server, or "not installed".
version_of() {
	case $1 in
	nginx) command -v nginx >/dev/null && nginx -v 2>&1 | sed 's/^nginx version: //' ;;
	haproxy) command -v haproxy >/dev/null && haproxy -v 2>/dev/null | awk 'NR == 1 { print $1, $3, $4 }' ;;
	varnish) command -v varnishd >/dev/null && varnishd -V 2>&1 | awk 'NR == 1 { print }' ;;
	wrk) command -v wrk >/dev/null && echo "wrk $(pkg_version wrk)" ;;
	gnuplot) command -v gnuplot >/dev/null && gnuplot --version ;;
	esac || echo "not installed"
}

CC_VERSION=$(${CC:-gcc} --version 2>/dev/null | head -1)

# virt_desc: "VM: kvm, container: docker" as far as systemd-detect-virt and the CPU flags tell.
virt_desc() {
	local vm ct
	vm=$(systemd-detect-virt --vm 2>/dev/null) || vm=
	[ -z "$vm" ] || [ "$vm" = none ] && grep -qw hypervisor /proc/cpuinfo && vm="yes (hypervisor flag)"
	ct=$(systemd-detect-virt --container 2>/dev/null) || ct=none
	echo "VM: ${vm:-none}, container: $ct"
}

# machine_desc [BUILD_DIR]: a markdown table describing the machine and software
# (with BUILD_DIR, also the versions of the programs built there).
machine_desc() {
	local cpu mem commit dirty build=${1:-} gov thp
	cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
	mem=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
	commit=$(git -C "$(dirname "${BASH_SOURCE[0]}")" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
	dirty=$(git -C "$(dirname "${BASH_SOURCE[0]}")" status --porcelain --untracked-files=no 2>/dev/null | head -1)
	[ -n "$dirty" ] && commit="$commit (working tree has uncommitted changes)"
	gov=$(cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_governor 2>/dev/null || echo "n/a (no cpufreq)")
	thp=$(sed 's/.*\[\(.*\)\].*/\1/' /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null || echo n/a)
	echo "| item | value |"
	echo "|---|---|"
	echo "| date (UTC) | $(date -u '+%Y-%m-%d %H:%M') |"
	echo "| CPU | $cpu, $(nproc) CPUs online |"
	echo "| virtualization | $(virt_desc) |"
	echo "| CPU frequency governor | $gov |"
	echo "| memory | $mem (transparent huge pages: $thp) |"
	echo "| kernel | $(uname -r) ($(uname -m)) |"
	echo "| OS | $(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME") |"
	if [ -n "$build" ]; then
		echo "| reflexd | $("$build/reflexd" --version 2>/dev/null || echo "not built") (built from the commit below) |"
		echo "| reflex-origin, reflex-bench | built from the commit below ($CC_VERSION) |"
	fi
	echo "| nginx | $(version_of nginx), Debian package $(pkg_version nginx) |"
	echo "| HAProxy | $(version_of haproxy), Debian package $(pkg_version haproxy) |"
	echo "| Varnish | $(version_of varnish), Debian package $(pkg_version varnish) |"
	echo "| wrk | Debian package $(pkg_version wrk) |"
	echo "| gnuplot | $(version_of gnuplot) |"
	echo "| git commit | $commit |"
	echo "| load average at start | $(cut -d' ' -f1-3 /proc/loadavg) |"
}
