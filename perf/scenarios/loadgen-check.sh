#!/usr/bin/env bash
# perf/scenarios/loadgen-check.sh — issue 4's target for reflex-bench, checked in one run:
#   1. on one thread, its closed-loop throughput against nginx `return 200` (1 KiB) is at
#      least wrk's on the same thread (interleaved repetitions, medians);
#   2. an open-loop run at -R 2000 holds 2000 +- 10 % requests/s.
#
# usage: perf/scenarios/loadgen-check.sh [BUILD_DIR]
# nginx on CPU 0 alone, the load generator on CPU 1 (the thing measured here is the load
# generator, so it must be the bottleneck: watch the `loadgen CPU` column).
# Knobs: QUICK=1 (1 x 3 s), REPS DUR CONNS REF_PORT LOAD_CPU SERVER_CPU OUTDIR KEEP,
# OUT (the report's path; default OUTDIR/loadgen-<date>.md; make bench sets it).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=lib.sh
. "$HERE/lib.sh"

BUILD=${1:-build}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
if [ "${QUICK:-0}" = 1 ]; then
	REPS=${REPS:-1} DUR=${DUR:-3}
else
	REPS=${REPS:-3} DUR=${DUR:-10}
fi
CONNS=${CONNS:-50}
REF_PORT=${REF_PORT:-18390}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
OUTDIR=${OUTDIR:-$ROOT/perf/results}
BENCH=$BUILD/reflex-bench

for tool in nginx wrk curl taskset ss; do
	command -v "$tool" >/dev/null || bench_die "$tool not found (make deps installs it)"
done
[ -x "$BENCH" ] || bench_die "$BENCH not built (make $BENCH)"
require_free_ports "$REF_PORT"
bench_init
MACHINE=$(machine_desc)

# nginx answering every path with 1 KiB from memory (the same config bench.sh can use as
# its origin stand-in): the cheapest server there is, so the load generator is the limit.
mkdir -p "$RUN_DIR/ref/tmp"
sed "s/@ORIGIN_PORT@/$REF_PORT/g" "$HERE/conf/nginx-origin.conf" >"$RUN_DIR/ref/ref.conf"
bench_start nginx-ref "$SERVER_CPU" "$REF_PORT" nginx -p "$RUN_DIR/ref/" -c ref.conf -g 'daemon off;'
SERVER_PID=$START_PID
URL=http://127.0.0.1:$REF_PORT/x
read -r code size < <(http_get "$URL" "$RUN_DIR/check.body")
[ "$code" = 200 ] && [ "$size" = 1024 ] || bench_die "nginx answered $code with $size bytes"

run_bench() { # run_bench CPU OUT ARGS...
	local cpu=$1 out=$2
	shift 2
	run_reflex_bench "$BENCH" "$cpu" "$out" "$DUR" "$@"
}
json() { json_num "$@"; }

RUNS=$RUN_DIR/runs.tsv
: >"$RUNS"
for rep in $(seq "$REPS"); do
	for gen in reflex-bench wrk; do
		out=$RUN_DIR/$gen-$rep.txt
		s0=$(tree_ticks "$SERVER_PID")
		t0=$(now_s)
		if [ "$gen" = wrk ]; then
			run_wrk "$LOAD_CPU" "$CONNS" "$DUR" "$URL" "$out" || bench_die "wrk failed"
			read -r rps p50 _ p99 _ err < <(wrk_parse "$out")
		else
			run_bench "$LOAD_CPU" "$out" -t 1 -c "$CONNS" -d "$DUR" "$URL" ||
				bench_die "reflex-bench failed: $(tail -3 "$out")"
			rps=$(json "$out" requests_per_second) p50=$(json "$out" p50) p99=$(json "$out" p99)
			err=$(json "$out" total)
		fi
		t1=$(now_s)
		s1=$(tree_ticks "$SERVER_PID")
		el=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
		printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$gen" "$rep" "$rps" "$p50" "$p99" "$err" \
			"$(pct "$(cat "$out.ticks")" "$el")" "$(pct $((s1 - s0)) "$el")" >>"$RUNS"
		bench_log "$gen rep $rep: $(fmt_int "$rps") req/s"
	done
done
out=$RUN_DIR/open.txt
run_bench "$LOAD_CPU" "$out" -t 1 -c "$CONNS" -d "$DUR" -R 2000 "$URL" || bench_die "reflex-bench -R 2000 failed"
open_rps=$(json "$out" requests_per_second)
open_ok=$(awk -v r="$open_rps" 'BEGIN { print (r >= 1800 && r <= 2200) ? "yes" : "NO" }')

col() { awk -F'\t' -v g="$1" -v c="$2" '$1 == g { print $c }' "$RUNS"; }
rb=$(median $(col reflex-bench 3))
wk=$(median $(col wrk 3))
ratio=$(awk -v a="$rb" -v b="$wk" 'BEGIN { printf "%.2f", (b > 0) ? a / b : 0 }')
# per_core GEN: median over the repetitions of req/s / the share of its core the generator
# used: its cost per request, which still compares when other tenants take the core.
per_core() {
	median $(awk -F'\t' -v g="$1" '$1 == g && $7 > 0 { print $3 * 100 / $7 }' "$RUNS")
}
cost_ratio=$(awk -v a="$(per_core reflex-bench)" -v b="$(per_core wrk)" 'BEGIN { printf "%.2f", (b > 0) ? a / b : 0 }')
REPORT=$RUN_DIR/report.md
{
	echo "# reflex-bench vs wrk (issue 4 target)"
	echo
	echo "$MACHINE"
	echo "| server | nginx \`return 200\`, 1 KiB, 1 worker, CPU $SERVER_CPU |"
	echo "| load | 1 thread, $CONNS connections, CPU $LOAD_CPU, $REPS interleaved repetition(s) of ${DUR}s |"
	echo
	echo "| generator | req/s (median) | P50 | P99 | spread | loadgen CPU | req/s per loadgen core | server CPU | errors |"
	echo "|---|---|---|---|---|---|---|---|---|"
	for g in reflex-bench wrk; do
		echo "| $g | $(fmt_int "$(median $(col $g 3))") | $(fmt_us "$(median $(col $g 4))") | $(fmt_us "$(median $(col $g 5))") | $(spread $(col $g 3)) | $(median $(col $g 7)) % | $(fmt_int "$(per_core $g)") | $(median $(col $g 8)) % | $(col $g 6 | awk '{ s += $1 } END { print s + 0 }') |"
	done
	echo
	echo "- closed loop: reflex-bench / wrk = **$ratio** (target: >= 1.00 on a quiet machine;"
	echo "  meaningful only when the load generator's core is the limit, \`loadgen CPU\` near 100 %)"
	echo "- req/s per loadgen core: reflex-bench / wrk = **$cost_ratio** (the same comparison by cost per"
	echo "  request; CPU time is tick-based, so short runs are rough)"
	echo "- open loop at -R 2000: **$(fmt_int "$open_rps") req/s** (within 2000 +- 10 %: $open_ok);"
	echo "  P50 $(fmt_us "$(json "$out" p50)"), P99 $(fmt_us "$(json "$out" p99)")"
	[ "${QUICK:-0}" = 1 ] && echo && echo "**QUICK run: 1 short repetition, for checking the script, not for quoting.**"
	true
} >"$REPORT"
dest=${OUT:-$OUTDIR/loadgen-$(date -u +%Y%m%d-%H%M).md}
mkdir -p "$(dirname "$dest")"
cp "$REPORT" "$dest"
cat "$REPORT"
bench_log "written to $dest"
