#!/usr/bin/env bash
# perf/scenarios/bench.sh — pass-through proxying (no cache) of a 1 KiB response:
# reflexd versus Debian's nginx, measured in one run on this machine.
#
# usage: perf/scenarios/bench.sh [BUILD_DIR]        (make bench runs it)
#
# What it does: starts reflex-origin (CPU 1), reflexd and nginx as reverse
# proxies (both on CPU 0, 1 worker each), checks that each proxy answers 200
# with the origin's 1024 bytes and that the requests reached the origin, then
# runs wrk -t1 -c50 (CPU 1) against each proxy: one warm-up per proxy, then
# REPS interleaved repetitions (rep 1: reflexd, nginx; rep 2: ...) so slow
# drifts of machine noise hit both alike. Reports medians, the CPU each process
# used, and writes the table to $OUTDIR/passthrough-<date>.md. Everything it
# started is stopped by PID on exit. See docs/bench.md.
#
# Knobs (environment):
#   QUICK=1          1 repetition of 3 s, 1 s warm-up (checks that the script works)
#   REPS DUR WARM    repetitions, seconds per repetition, warm-up seconds (3, 10, 3)
#   CONNS            wrk connections (50)
#   TARGETS          proxies to measure ("reflexd nginx")
#   ORIGIN           reflex-origin (default) or nginx (development stand-in)
#   ORIGIN_PORT REFLEXD_PORT NGINX_PORT   loopback ports (18380 18381 18382)
#   PROXY_CPU LOAD_CPU ORIGIN_CPU         CPU placement (0 1 1)
#   REFLEXD_ARGS     extra arguments appended to the reflexd command line
#   OPEN_RATE        open-loop section with reflex-bench: "auto" (default: half the
#                    slowest proxy's closed-loop req/s), a rate in req/s, or 0 (skip)
#   CHURN=1          also connection per request (wrk -H 'Connection: close')
#   SWEEP=1          also a latency-vs-load sweep: each proxy in open loop at SWEEP_LEVELS
#                    percent ("10 30 50 70 90") of its own closed-loop req/s
#   PLOTS=0          no PNG plots (they need gnuplot; skipped with a note without it)
#   OUTDIR           where the result file goes (perf/results)
#   KEEP=1           keep the run directory (server logs, raw wrk output)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=lib.sh
. "$HERE/lib.sh"

BUILD=${1:-build}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac

if [ "${QUICK:-0}" = 1 ]; then
	REPS=${REPS:-1} DUR=${DUR:-3} WARM=${WARM:-1}
else
	REPS=${REPS:-3} DUR=${DUR:-10} WARM=${WARM:-3}
fi
CONNS=${CONNS:-50}
TARGETS=${TARGETS:-reflexd nginx}
ORIGIN=${ORIGIN:-reflex-origin}
ORIGIN_PORT=${ORIGIN_PORT:-18380}
REFLEXD_PORT=${REFLEXD_PORT:-18381}
NGINX_PORT=${NGINX_PORT:-18382}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
ORIGIN_CPU=${ORIGIN_CPU:-1}
REFLEXD_ARGS=${REFLEXD_ARGS:-}
OUTDIR=${OUTDIR:-$ROOT/perf/results}
OPEN_RATE=${OPEN_RATE:-auto}
SWEEP=${SWEEP:-0}
CHURN=${CHURN:-0}
SWEEP_LEVELS=${SWEEP_LEVELS:-10 30 50 70 90}
PLOTS=${PLOTS:-1}
BENCH=$BUILD/reflex-bench
STAMP=$(date -u +%Y%m%d-%H%M)
# cc=no-store makes the origin mark the response uncacheable, so a proxy that
# caches by default still passes every request through (checked below).
URL_PATH='/pass/1k?cc=no-store'

for tool in nginx wrk curl taskset ss; do
	command -v "$tool" >/dev/null || bench_die "$tool not found (make deps installs it)"
done
[ "$(nproc)" -ge 2 ] || bench_die "needs 2 CPUs (proxy on one, load generator on the other)"
case $ORIGIN in
reflex-origin) [ -x "$BUILD/reflex-origin" ] || bench_die "$BUILD/reflex-origin not built (make $BUILD/reflex-origin)" ;;
nginx) ;;
*) bench_die "ORIGIN must be reflex-origin or nginx" ;;
esac
ports=("$ORIGIN_PORT")
for t in $TARGETS; do
	case $t in
	reflexd)
		[ -x "$BUILD/reflexd" ] || bench_die "$BUILD/reflexd not built (make $BUILD/reflexd)"
		ports+=("$REFLEXD_PORT")
		;;
	nginx) ports+=("$NGINX_PORT") ;;
	*) bench_die "unknown target '$t' (known: reflexd nginx)" ;;
	esac
done
require_free_ports "${ports[@]}"
if { [ "$OPEN_RATE" != 0 ] || [ "$SWEEP" = 1 ]; } && [ ! -x "$BENCH" ]; then
	bench_log "$BENCH not built: no open-loop section and no sweep (make $BENCH)"
	OPEN_RATE=0 SWEEP=0
fi
if [ "$PLOTS" = 1 ] && ! command -v gnuplot >/dev/null; then
	bench_log "gnuplot not installed: no plots (apt-get install gnuplot-nox)"
	PLOTS=0
fi

bench_init
bench_log "run directory $RUN_DIR; $REPS x ${DUR}s after ${WARM}s warm-up, wrk -t1 -c$CONNS"
MACHINE=$(machine_desc)

# ---- origin -------------------------------------------------------------------
declare -A PID PORT
PORT[reflexd]=$REFLEXD_PORT
PORT[nginx]=$NGINX_PORT

if [ "$ORIGIN" = reflex-origin ]; then
	bench_start origin "$ORIGIN_CPU" "$ORIGIN_PORT" \
		"$BUILD/reflex-origin" --listen "127.0.0.1:$ORIGIN_PORT" --name origin
	origin_requests() { reflex_origin_requests "$ORIGIN_PORT"; }
	ORIGIN_SELF=0 # /__stats does not count itself
else
	mkdir -p "$RUN_DIR/origin/tmp"
	sed "s/@ORIGIN_PORT@/$ORIGIN_PORT/g" "$HERE/conf/nginx-origin.conf" >"$RUN_DIR/origin/nginx-origin.conf"
	bench_start origin "$ORIGIN_CPU" "$ORIGIN_PORT" \
		nginx -p "$RUN_DIR/origin/" -c nginx-origin.conf -g 'daemon off;'
	origin_requests() { nginx_status_requests "$ORIGIN_PORT" /__nginx_status; }
	ORIGIN_SELF=1 # stub_status counts the request that reads it
fi
PID[origin]=$START_PID
ORIGIN_VERSION=$ORIGIN
[ "$ORIGIN" = nginx ] && ORIGIN_VERSION="nginx $(pkg_version nginx) (development stand-in, not reflex-origin)"

read -r code size < <(http_get "http://127.0.0.1:$ORIGIN_PORT$URL_PATH" "$RUN_DIR/origin.body")
[ "$code" = 200 ] && [ "$size" = 1024 ] || bench_die "origin answered $code with $size bytes (want 200, 1024)"

# ---- proxies ----------------------------------------------------------------------
for t in $TARGETS; do
	case $t in
	reflexd)
		# shellcheck disable=SC2086 # REFLEXD_ARGS is a list of words
		bench_start reflexd "$PROXY_CPU" "$REFLEXD_PORT" "$BUILD/reflexd" \
			--listen "127.0.0.1:$REFLEXD_PORT" --upstream "127.0.0.1:$ORIGIN_PORT" \
			--workers 1 $REFLEXD_ARGS
		;;
	nginx)
		mkdir -p "$RUN_DIR/nginx/tmp"
		sed -e "s/@PROXY_PORT@/$NGINX_PORT/g" -e "s/@ORIGIN_PORT@/$ORIGIN_PORT/g" \
			"$HERE/conf/nginx-proxy.conf" >"$RUN_DIR/nginx/nginx-proxy.conf"
		bench_start nginx "$PROXY_CPU" "$NGINX_PORT" \
			nginx -p "$RUN_DIR/nginx/" -c nginx-proxy.conf -g 'daemon off;'
		;;
	esac
	PID[$t]=$START_PID
done

# ---- checks: each proxy returns the origin's 1024 bytes, and every request reaches the origin
checks=()
for t in $TARGETS; do
	before=$(origin_requests)
	for i in 1 2 3; do
		read -r code size < <(http_get "http://127.0.0.1:${PORT[$t]}$URL_PATH" "$RUN_DIR/$t.body")
		[ "$code" = 200 ] && [ "$size" = 1024 ] ||
			bench_die "$t answered $code with $size bytes (want 200, 1024); log: $RUN_DIR/$t.log (KEEP=1 keeps it)"
		cmp -s "$RUN_DIR/$t.body" "$RUN_DIR/origin.body" || bench_die "$t's body differs from the origin's"
	done
	after=$(origin_requests)
	[ -n "$before" ] && [ -n "$after" ] || bench_die "cannot read the origin's request counter"
	n=$((after - before - ORIGIN_SELF))
	[ "$n" -eq 3 ] || bench_die "3 requests through $t reached the origin $n times (want 3: no caching, no retries)"
	checks+=("$t: 3 GETs → 200, 1024 bytes identical to the origin's, 3 requests at the origin")
	bench_log "check $t: ok"
done

# ---- measure ------------------------------------------------------------------------
RUNS=$RUN_DIR/runs.tsv
printf 'target\trep\trps\tp50_us\tp90_us\tp99_us\trequests\terrors\tproxy_pct\twrk_pct\torigin_pct\torigin_reqs\tloadavg\tother_pct\n' >"$RUNS"

# measure TARGET REP SECONDS: one wrk run; appends a line to $RUNS unless REP is "warm".
measure() {
	local t=$1 rep=$2 secs=$3 tsv=${4:-$RUNS} hdr=${5:-}
	local out="$RUN_DIR/wrk-$1-$2${hdr:+-churn}.txt"
	local p0 o0 r0 t0 b0 p1 o1 r1 t1 b1 el load wt other
	load=$(cut -d' ' -f1 /proc/loadavg)
	p0=$(tree_ticks "${PID[$t]}") o0=$(tree_ticks "${PID[origin]}") r0=$(origin_requests)
	b0=$(busy_ticks)
	t0=$(now_s)
	run_wrk "$LOAD_CPU" "$CONNS" "$secs" "http://127.0.0.1:${PORT[$t]}$URL_PATH" "$out" "$hdr" ||
		bench_die "wrk failed against $t: $(tail -3 "$out")"
	t1=$(now_s)
	b1=$(busy_ticks)
	p1=$(tree_ticks "${PID[$t]}") o1=$(tree_ticks "${PID[origin]}") r1=$(origin_requests)
	el=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
	[ "$rep" = warm ] && return 0
	read -r rps p50 p90 p99 n err < <(wrk_parse "$out")
	wt=$(cat "$out.ticks")
	# Everything else the machine ran meanwhile (other tenants, the kernel's
	# unattributed work): a noise flag, not a measurement.
	other=$((b1 - b0 - (p1 - p0) - wt - (o1 - o0)))
	[ "$other" -lt 0 ] && other=0
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$rep" "$rps" "$p50" "$p90" "$p99" \
		"$n" "$err" "$(pct $((p1 - p0)) "$el")" "$(pct "$wt" "$el")" \
		"$(pct $((o1 - o0)) "$el")" $((r1 - r0 - ORIGIN_SELF)) "$load" "$(pct "$other" "$el")" >>"$tsv"
	bench_log "$t${hdr:+ (churn)} rep $rep: $(fmt_int "$rps") req/s, P50 $(fmt_us "$p50"), P99 $(fmt_us "$p99"), errors $err"
}

for t in $TARGETS; do
	bench_log "warm-up $t (${WARM}s)"
	measure "$t" warm "$WARM"
done
for rep in $(seq "$REPS"); do
	for t in $TARGETS; do
		measure "$t" "$rep" "$DUR"
	done
done

# ---- connection per request (CHURN=1) --------------------------------------------------
# wrk sends Connection: close, so every request costs the proxy an accept and a close on
# the client side; upstream connections stay pooled.
CHURN_RUNS=$RUN_DIR/churn.tsv
head -1 "$RUNS" >"$CHURN_RUNS"
if [ "$CHURN" = 1 ]; then
	for rep in $(seq "$REPS"); do
		for t in $TARGETS; do
			measure "$t" "$rep" "$DUR" "$CHURN_RUNS" "Connection: close"
		done
	done
fi

# ---- open loop: latency at a common rate, from the intended send time -----------------
# Closed-loop latency at saturation is mostly queueing; this shows what a client sees
# below saturation, without coordinated omission (reflex-bench -R, docs/bench.md).
OPEN_RUNS=$RUN_DIR/open.tsv
: >"$OPEN_RUNS"
if [ "$OPEN_RATE" = auto ]; then
	OPEN_RATE=$(for t in $TARGETS; do median $(awk -F'\t' -v t="$t" '$1 == t { print $3 }' "$RUNS"); done |
		sort -g | head -1 | awk '{ r = int($1 / 2 / 500) * 500; print (r < 500) ? 500 : r }')
fi
# open_run TARGET RATE OUT TSV LABEL: one reflex-bench open-loop run against TARGET;
# appends "LABEL rps p50 p90 p99 p999 max errors proxy%" (tab-separated) to TSV.
open_run() {
	local t=$1 rate=$2 out=$3 tsv=$4 label=$5 p0 p1 t0 t1 el
	p0=$(tree_ticks "${PID[$t]}") t0=$(now_s)
	run_reflex_bench "$BENCH" "$LOAD_CPU" "$out" "$((DUR + WARM))" -t 1 -c "$CONNS" \
		-d "$DUR" -w "$WARM" -R "$rate" "http://127.0.0.1:${PORT[$t]}$URL_PATH" ||
		bench_die "reflex-bench failed against $t: $(tail -3 "$out")"
	t1=$(now_s) p1=$(tree_ticks "${PID[$t]}")
	el=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$label" \
		"$(json_num "$out" requests_per_second)" "$(json_num "$out" p50)" \
		"$(json_num "$out" p90)" "$(json_num "$out" p99)" "$(json_num "$out" p999)" \
		"$(json_num "$out" max)" "$(json_num "$out" total)" "$(pct $((p1 - p0)) "$el")" >>"$tsv"
	bench_log "$t open loop at $rate req/s: P50 $(fmt_us "$(json_num "$out" p50)"), P99 $(fmt_us "$(json_num "$out" p99)"), P99.9 $(fmt_us "$(json_num "$out" p999)")"
}

if [ "$OPEN_RATE" != 0 ]; then
	for rep in $(seq "$REPS"); do
		for t in $TARGETS; do
			open_run "$t" "$OPEN_RATE" "$RUN_DIR/open-$t-$rep.json" "$OPEN_RUNS" "$t"$'\t'"$rep"
		done
	done
fi

# ---- latency vs load: each proxy at fractions of its own closed-loop peak ----------------
SWEEP_RUNS=$RUN_DIR/sweep.tsv
: >"$SWEEP_RUNS"
declare -A PEAK
if [ "$SWEEP" = 1 ]; then
	for t in $TARGETS; do
		PEAK[$t]=$(median $(awk -F'\t' -v t="$t" '$1 == t { print $3 }' "$RUNS"))
	done
	# Interleaved (repetition, level, proxy) like the closed-loop runs.
	for rep in $(seq "$REPS"); do
		for lvl in $SWEEP_LEVELS; do
			for t in $TARGETS; do
				rate=$(awk -v p="${PEAK[$t]}" -v l="$lvl" 'BEGIN { r = int(p * l / 100); print (r < 100) ? 100 : r }')
				open_run "$t" "$rate" "$RUN_DIR/sweep-$t-$lvl-$rep.json" "$SWEEP_RUNS" \
					"$t"$'\t'"$lvl"$'\t'"$rate"$'\t'"$rep"
			done
		done
	done
fi

# ---- plots (gnuplot) ------------------------------------------------------------------
# percentile_curve JSON: "percentile latency_ms" rows from reflex-bench's histogram, with x
# as 1/(1-p) so that P90, P99, P99.9 ... are evenly spaced (the HdrHistogram plot).
percentile_curve() {
	grep -o '"buckets":\[.*\]' "$1" | grep -o '\[[0-9]*,[0-9]*\]' | tr -d '[]' |
		awk -F, '{ v[NR] = $1; c[NR] = $2; n += $2 } END {
			for (i = 1; i <= NR; i++) { s += c[i]; p = s / n; if (p > 0.99999) p = 0.99999
				printf "%.6f %.3f\n", 1 / (1 - p), v[i] / 1000 } }'
}
PLOT_FILES=()
if [ "$PLOTS" = 1 ] && { [ -s "$OPEN_RUNS" ] || [ -s "$SWEEP_RUNS" ]; }; then
	mkdir -p "$OUTDIR"
	if [ -s "$OPEN_RUNS" ]; then
		png=$OUTDIR/passthrough-$STAMP-percentiles.png
		plot=""
		for t in $TARGETS; do
			percentile_curve "$RUN_DIR/open-$t-1.json" >"$RUN_DIR/curve-$t.dat"
			plot+="${plot:+, }'$RUN_DIR/curve-$t.dat' using 1:2 with steps lw 2 title '$t'"
		done
		gnuplot <<-EOF && PLOT_FILES+=("$png")
			set terminal pngcairo size 900,500
			set output '$png'
			set title 'Pass-through latency by percentile, open loop at $OPEN_RATE req/s (repetition 1)'
			set logscale x
			set xtics ('50%%' 2, '90%%' 10, '99%%' 100, '99.9%%' 1000, '99.99%%' 10000, '99.999%%' 100000)
			set xlabel 'percentile'
			set ylabel 'latency (ms)'
			set logscale y
			set grid
			set key top left
			plot $plot
		EOF
	fi
	if [ -s "$SWEEP_RUNS" ]; then
		png=$OUTDIR/passthrough-$STAMP-sweep.png
		plot="" lc=0
		for t in $TARGETS; do
			lc=$((lc + 1))
			for lvl in $SWEEP_LEVELS; do
				f() { awk -F'\t' -v t="$t" -v l="$lvl" -v c="$1" '$1 == t && $2 == l { print $c }' "$SWEEP_RUNS"; }
				echo "$(median $(f 5)) $(median $(f 6)) $(median $(f 8)) $(median $(f 9))"
			done >"$RUN_DIR/sweep-$t.dat"
			plot+="${plot:+, }'$RUN_DIR/sweep-$t.dat' using 1:(\$4/1000) with linespoints lc $lc lw 1 dt 3 title '$t P99.9'"
			plot+=", '$RUN_DIR/sweep-$t.dat' using 1:(\$3/1000) with linespoints lc $lc lw 2 title '$t P99'"
			plot+=", '$RUN_DIR/sweep-$t.dat' using 1:(\$2/1000) with linespoints lc $lc lw 1 dt 2 title '$t P50'"
		done
		gnuplot <<-EOF && PLOT_FILES+=("$png")
			set terminal pngcairo size 1000,500
			set output '$png'
			set title 'Pass-through latency vs offered load (open loop; % of each proxy''s own peak)'
			set xlabel 'achieved req/s'
			set ylabel 'latency (ms)'
			set logscale y
			set grid
			set key outside right top
			plot $plot
		EOF
	fi
fi

# ---- report -------------------------------------------------------------------------
col() { # col TARGET COLUMN [FILE]: the column's values for TARGET, one per repetition
	awk -F'\t' -v t="$1" -v c="$2" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == c) k = i; next }
		$1 == t { print $k }' "${3:-$RUNS}"
}
nginx_rps=
case " $TARGETS " in *" nginx "*) nginx_rps=$(median $(col nginx rps)) ;; esac

limit_of() { # limit_of PROXY_PCT WRK_PCT ORIGIN_PCT OTHER_PCT: which CPU was saturated
	awk -v p="$1" -v w="$2" -v o="$3" -v x="$4" 'BEGIN {
		if (p >= 90) print "proxy (CPU " '"$PROXY_CPU"' ")";
		else if (w + o >= 90) print "wrk + origin (CPU " '"$LOAD_CPU"' ")";
		else if (x >= 25) print "other tenants (noisy run)";
		else print "neither core full" }'
}

REPORT=$RUN_DIR/report.md
{
	echo "# Pass-through proxying, 1 KiB response: reflexd vs nginx"
	echo
	echo "$MACHINE"
	echo "| origin | $ORIGIN_VERSION, 1 worker |"
	echo "| proxies | reflexd --workers 1; nginx 1 worker, upstream keepalive 128, HTTP/1.1 to the origin, access_log off |"
	echo "| load | wrk -t1 -c$CONNS --latency, $REPS interleaved repetition(s) of ${DUR}s after a ${WARM}s warm-up per proxy |"
	echo "| placement | proxy on CPU $PROXY_CPU alone; wrk and origin share CPU $LOAD_CPU |"
	echo "| request | GET $URL_PATH (origin: 200, 1024 bytes, Cache-Control: no-store) |"
	echo
	echo "## Closed loop (wrk)"
	echo
	echo "Medians over the repetitions. \`proxy CPU\`, \`wrk CPU\`, \`origin CPU\` are shares of one core"
	echo "(utime+stime from /proc/PID/stat over the run); \`other CPU\` is what the rest of the machine"
	echo "used meanwhile (busy time in /proc/stat minus those three: other tenants, unattributed kernel"
	echo "work; a noise flag, not a measurement); \`limit\` names the core that was full."
	echo
	echo "| server | req/s | P50 | P99 | ratio vs nginx | spread | proxy CPU | wrk CPU | origin CPU | other CPU | limit | errors |"
	echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
	for t in $TARGETS; do
		rps=$(median $(col "$t" rps))
		ratio=-
		[ -n "$nginx_rps" ] && ratio=$(awk -v a="$rps" -v b="$nginx_rps" 'BEGIN { printf (b > 0) ? "%.2f" : "-", a / b }')
		pp=$(median $(col "$t" proxy_pct)) wp=$(median $(col "$t" wrk_pct)) op=$(median $(col "$t" origin_pct))
		xp=$(median $(col "$t" other_pct))
		errs=$(col "$t" errors | awk '{ s += $1 } END { print s + 0 }')
		echo "| $t | $(fmt_int "$rps") | $(fmt_us "$(median $(col "$t" p50_us))") | $(fmt_us "$(median $(col "$t" p99_us))") | $ratio | $(spread $(col "$t" rps)) | ${pp%.*} % | ${wp%.*} % | ${op%.*} % | ${xp%.*} % | $(limit_of "$pp" "$wp" "$op" "$xp") | $errs |"
	done
	echo
	echo "Every repetition (\`origin reqs\` = requests that reached the origin during the run; it"
	echo "should be close to \`requests\`, i.e. nothing was cached; \`load\` = 1-minute load average"
	echo "before the run, a hint of other tenants' activity):"
	echo
	echo "| server | rep | req/s | P50 | P90 | P99 | requests | origin reqs | errors | proxy CPU | wrk CPU | origin CPU | other CPU | load |"
	echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
	tail -n +2 "$RUNS" | sort -t$'\t' -k1,1 -k2,2n | while IFS=$'\t' read -r t rep rps p50 p90 p99 n err pp wp op oreq load xp; do
		echo "| $t | $rep | $(fmt_int "$rps") | $(fmt_us "$p50") | $(fmt_us "$p90") | $(fmt_us "$p99") | $(fmt_int "$n") | $(fmt_int "$oreq") | $err | $pp % | $wp % | $op % | $xp % | $load |"
	done
	echo
	echo "Checks before measuring:"
	echo
	for c in "${checks[@]}"; do echo "- $c"; done
	echo
	echo "Latencies are wrk's (closed loop, measured from the actual send: they include queueing at"
	echo "saturation and suffer from coordinated omission; compare them only between rows of this table)."
	if [ "$(wc -l <"$CHURN_RUNS")" -gt 1 ]; then
		echo
		echo "## Connection per request"
		echo
		echo "wrk as above with \`-H 'Connection: close'\`: a new client connection per request (the"
		echo "proxies keep their upstream connections). One wrk thread tops out at a few tens of"
		echo "thousands of connections per second, so compare \`req/s per proxy core\` (req/s / proxy CPU)"
		echo "when the limit is CPU $LOAD_CPU."
		echo
		echo "| server | req/s | P50 | P99 | ratio vs nginx | req/s per proxy core | proxy CPU | wrk CPU | origin CPU | other CPU | limit | errors |"
		echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
		nginx_churn=
		case " $TARGETS " in *" nginx "*) nginx_churn=$(median $(col nginx rps "$CHURN_RUNS")) ;; esac
		for t in $TARGETS; do
			rps=$(median $(col "$t" rps "$CHURN_RUNS"))
			ratio=-
			[ -n "$nginx_churn" ] && ratio=$(awk -v a="$rps" -v b="$nginx_churn" 'BEGIN { printf (b > 0) ? "%.2f" : "-", a / b }')
			pp=$(median $(col "$t" proxy_pct "$CHURN_RUNS")) wp=$(median $(col "$t" wrk_pct "$CHURN_RUNS"))
			op=$(median $(col "$t" origin_pct "$CHURN_RUNS")) xp=$(median $(col "$t" other_pct "$CHURN_RUNS"))
			per=$(awk -v r="$rps" -v p="$pp" 'BEGIN { print (p > 0) ? r * 100 / p : 0 }')
			errs=$(col "$t" errors "$CHURN_RUNS" | awk '{ s += $1 } END { print s + 0 }')
			echo "| $t | $(fmt_int "$rps") | $(fmt_us "$(median $(col "$t" p50_us "$CHURN_RUNS"))") | $(fmt_us "$(median $(col "$t" p99_us "$CHURN_RUNS"))") | $ratio | $(fmt_int "$per") | ${pp%.*} % | ${wp%.*} % | ${op%.*} % | ${xp%.*} % | $(limit_of "$pp" "$wp" "$op" "$xp") | $errs |"
		done
	fi
	if [ -s "$OPEN_RUNS" ]; then
		echo
		echo "## Open loop at $(fmt_int "$OPEN_RATE") req/s"
		echo
		echo "reflex-bench -t1 -c$CONNS -R $OPEN_RATE (constant schedule), ${DUR}s after ${WARM}s warm-up, same"
		echo "placement; latency from each request's intended send time (no coordinated omission)."
		echo "Medians over the repetitions."
		echo
		echo "| server | req/s | P50 | P90 | P99 | P99.9 | max | proxy CPU | errors |"
		echo "|---|---|---|---|---|---|---|---|---|"
		for t in $TARGETS; do
			ocol() { awk -F'\t' -v t="$t" -v c="$1" '$1 == t { print $c }' "$OPEN_RUNS"; }
			echo "| $t | $(fmt_int "$(median $(ocol 3))") | $(fmt_us "$(median $(ocol 4))") | $(fmt_us "$(median $(ocol 5))") | $(fmt_us "$(median $(ocol 6))") | $(fmt_us "$(median $(ocol 7))") | $(fmt_us "$(median $(ocol 8))") | $(median $(ocol 10)) % | $(ocol 9 | awk '{ s += $1 } END { print s + 0 }') |"
		done
	fi
	if [ -s "$SWEEP_RUNS" ]; then
		echo
		echo "## Latency vs load"
		echo
		echo "Each proxy in open loop (reflex-bench, as above) at $SWEEP_LEVELS % of its own closed-loop"
		echo "req/s from this run; medians over the repetitions; \`spread\` is (max - min) / median of P99."
		echo
		echo "| server | load | rate | req/s | P50 | P90 | P99 | P99.9 | max | spread | proxy CPU | errors |"
		echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
		for t in $TARGETS; do
			for lvl in $SWEEP_LEVELS; do
				scol() { awk -F'\t' -v t="$t" -v l="$lvl" -v c="$1" '$1 == t && $2 == l { print $c }' "$SWEEP_RUNS"; }
				echo "| $t | $lvl % | $(fmt_int "$(median $(scol 3))") | $(fmt_int "$(median $(scol 5))") | $(fmt_us "$(median $(scol 6))") | $(fmt_us "$(median $(scol 7))") | $(fmt_us "$(median $(scol 8))") | $(fmt_us "$(median $(scol 9))") | $(fmt_us "$(median $(scol 10))") | $(spread $(scol 8)) | $(median $(scol 12)) % | $(scol 11 | awk '{ s += $1 } END { print s + 0 }') |"
			done
		done
	fi
	if [ ${#PLOT_FILES[@]} -gt 0 ]; then
		echo
		for f in "${PLOT_FILES[@]}"; do echo "![$(basename "$f" .png)]($(basename "$f"))"; done
	fi
	[ "${QUICK:-0}" = 1 ] && echo && echo "**QUICK run: 1 short repetition, for checking the script, not for quoting.**"
	true
} >"$REPORT"

mkdir -p "$OUTDIR"
out=$OUTDIR/passthrough-$STAMP.md
cp "$REPORT" "$out"
cat "$REPORT"
bench_log "written to $out"
