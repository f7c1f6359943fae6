#!/usr/bin/env bash
# perf/scenarios/features.sh — the feature benchmarks of `make bench`, after bench.sh's
# proxy/cache suite: each one compares a Reflex feature with what a user has instead, on
# this machine, in one run (a benchmark, never a test: it gates on nothing).
#
#   pool       one of four endpoints turns slow: client P99 before/during/after, reflexd
#              (P2C+EWMA, with and without hedging) vs nginx and HAProxy   (pool_bench.sh)
#   trace      pass-through with anomaly tracing off vs on, ring loss under a flood
#                                                                          (trace_bench.sh)
#   tls        full handshakes/s and keep-alive requests/s, reflexd vs nginx (tls_bench.sh)
#   ratelimit  SYN-flood drop rate: XDP, tc, nftables, userspace; BPF cost per packet
#                                                                          (ratelimit_bench.sh)
#   rules      rules on vs off end to end; Hyperscan vs PCRE2 scan throughput
#                                                                          (rules_bench.sh)
#
# Usage: perf/scenarios/features.sh [BUILD_DIR]
# Environment: FEATURES="pool trace tls ratelimit rules" (a subset runs only those),
#   OUTDIR=perf/results. Each script runs with its own defaults (see its header).
# Output: OUTDIR/features-STAMP/{index.md, NAME.md, NAME.log}; a complete run (every
# feature) also rewrites OUTDIR/latest-features.md. A feature whose script fails is
# reported as failed with the end of its log; the others still run.
set -uo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:-${BUILD:-build}}
ALL="pool trace tls ratelimit rules"
FEATURES=${FEATURES:-$ALL}
OUTDIR=${OUTDIR:-perf/results}
STAMP=$(date -u +%Y%m%d-%H%M)
DIR=$OUTDIR/features-$STAMP
mkdir -p "$DIR"
INDEX=$DIR/index.md

declare -A TITLE=(
	[pool]="Pool resilience: one slow endpoint of four (issue 6)"
	[trace]="Anomaly tracing: cost on pass-through, ring loss under a flood (issue 9)"
	[tls]="TLS termination: handshakes and keep-alive, reflexd vs nginx (issue 10)"
	[ratelimit]="Kernel rate limiter: SYN-flood drops and cost per packet (issue 8)"
	[rules]="Reflex rules: end-to-end cost and scan throughput (issue 7)"
)
declare -A CMD=(
	[pool]="env BUILD=$BUILD perf/scenarios/pool_bench.sh"
	[trace]="perf/scenarios/trace_bench.sh $BUILD"
	[tls]="perf/scenarios/tls_bench.sh $BUILD"
	[ratelimit]="perf/scenarios/ratelimit_bench.sh $BUILD"
	[rules]="perf/scenarios/rules_bench.sh $BUILD"
)

{
	echo "# Reflex feature benchmarks $STAMP"
	echo
	echo "Written by \`make bench\` (perf/scenarios/features.sh) on $(uname -n), kernel $(uname -r),"
	echo "$(nproc) CPUs; load average at start: $(cut -d' ' -f1-3 /proc/loadavg)."
	echo "Each section is the Markdown its script printed; its stderr is in NAME.log."
	echo
} >"$INDEX"

failed=0
for f in $FEATURES; do
	[ -n "${CMD[$f]:-}" ] || { echo "features.sh: unknown feature '$f' (know: $ALL)" >&2; exit 2; }
	echo "[features $(date -u +%H:%M:%S)] $f: ${CMD[$f]}" >&2
	t0=$(date +%s)
	# shellcheck disable=SC2086 # CMD holds a command line
	${CMD[$f]} >"$DIR/$f.md" 2>"$DIR/$f.log"
	rc=$?
	{
		echo "## ${TITLE[$f]}"
		echo
		echo "\`${CMD[$f]}\` — $(($(date +%s) - t0)) s, load average after: $(cut -d' ' -f1-3 /proc/loadavg)."
		echo
		if [ $rc -eq 0 ]; then
			cat "$DIR/$f.md"
		else
			failed=$((failed + 1))
			echo "**Failed** (exit $rc). End of its log:"
			echo
			echo '```'
			tail -15 "$DIR/$f.log"
			echo '```'
		fi
		echo
	} >>"$INDEX"
done

if [ "$failed" -eq 0 ] && [ "$FEATURES" = "$ALL" ]; then
	{
		echo "# Latest feature benchmark results"
		echo
		echo "[features-$STAMP](features-$STAMP/index.md)."
		echo "Written by \`make bench\` (perf/scenarios/features.sh); see docs/bench.md."
	} >"$OUTDIR/latest-features.md"
fi
cat "$INDEX"
echo "[features] written to $DIR/ ($failed failed)" >&2
exit $((failed > 0))
