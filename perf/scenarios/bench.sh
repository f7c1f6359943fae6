#!/usr/bin/env bash
# perf/scenarios/bench.sh — the benchmark suite (make bench): reflexd beside Debian's
# nginx, HAProxy and Varnish, one run, this machine. See docs/bench.md.
#
# usage: perf/scenarios/bench.sh [BUILD_DIR]
#
# Starts reflex-origin and the four servers on loopback (each with one worker/thread
# where the server allows it, keep-alive to the origin, a cache for /hit/ paths), checks
# them, then runs every scenario against every server: the server under test on CPU 0,
# the load generator on CPU 1 (the origin shares CPU 1; the issue-2 scenario also
# measures it on CPU 0). Repetitions are interleaved (rep 1: every server, rep 2: ...)
# so that slow drifts of machine noise hit all servers alike; tables report the median
# of the repetitions and their spread. Results go to $OUTDIR/<UTC stamp>/. Everything
# started is stopped by PID on exit.
#
# Scenarios (SCENARIOS, in this order):
#   issue2   pass-through, reflexd vs nginx with wrk -t1 -c50, origin on CPU 1 then on CPU 0
#   pass     pass-through (no cache) of 1 KiB, reflex-bench closed loop
#   churn    pass-through with a new client connection per request (reflex-bench --churn)
#   hit1     cache hit, one object
#   zipf     cache hit over ZIPF_OBJECTS objects, Zipf(ZIPF_S) popularity (a request list)
#   hitchurn cache hit with a new client connection per request (reflex-bench --churn)
#   sweep    open loop at SWEEP_LEVELS % of each server's own peak in SWEEP_ON (pass)
#   loadgen  issue 4's target for reflex-bench (perf/scenarios/loadgen-check.sh)
#
# Knobs (environment):
#   QUICK=1            ~2-minute subset: 1 repetition of 2 s (checks the suite, not for quoting)
#   SCENARIOS          ("issue2 pass churn hit1 zipf hitchurn sweep loadgen")
#   TARGETS            ("reflexd nginx haproxy varnish")
#   REPS DUR WARM      repetitions, seconds per run, warm-up seconds per server and scenario (3 10 3)
#   SWEEP_DUR SWEEP_WARM  seconds per sweep run and its warm-up (5 1)
#   SWEEP_LEVELS       percent of each server's peak ("10 30 50 70 90")
#   SWEEP_ON           the scenario swept, pass (default) or hit1; its closed-loop median is the peak
#   CONNS              connections of the load generator (50)
#   QUIET_WAIT QUIET_PCT QUIET_BUDGET  before each run wait up to QUIET_WAIT s (15; QUICK: 0)
#                      for a second in which other tenants use <= QUIET_PCT % (10) of a core,
#                      at most QUIET_BUDGET s (300) in all
#   ZIPF_OBJECTS ZIPF_S  (10000 1.0)
#   ORIGIN_PORT REFLEXD_PORT NGINX_PORT HAPROXY_PORT VARNISH_PORT  (18380 .. 18384)
#   PROXY_CPU LOAD_CPU ORIGIN_CPU   (0 1 1)
#   REFLEXD_ARGS       extra reflexd arguments
#   REFLEXD_CACHE_CONF YAML fragment that enables reflexd's cache (conf/reflexd-cache.yaml)
#   PLOTS=0            no PNG plots
#   OUTDIR             results root (perf/results); KEEP=1 keeps the run directory
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=lib.sh
. "$HERE/lib.sh"

BUILD=${1:-build}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac

QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
	REPS=${REPS:-1} DUR=${DUR:-2} WARM=${WARM:-1} SWEEP_DUR=${SWEEP_DUR:-1} SWEEP_WARM=${SWEEP_WARM:-0}
	QUIET_WAIT=${QUIET_WAIT:-0}
else
	REPS=${REPS:-3} DUR=${DUR:-10} WARM=${WARM:-3} SWEEP_DUR=${SWEEP_DUR:-5} SWEEP_WARM=${SWEEP_WARM:-1}
	QUIET_WAIT=${QUIET_WAIT:-15}
fi
QUIET_PCT=${QUIET_PCT:-10}
QUIET_BUDGET=${QUIET_BUDGET:-300}
DEFAULT_SCENARIOS="issue2 pass churn hit1 zipf hitchurn sweep loadgen"
DEFAULT_TARGETS="reflexd nginx haproxy varnish"
SCENARIOS=${SCENARIOS:-$DEFAULT_SCENARIOS}
TARGETS=${TARGETS:-$DEFAULT_TARGETS}
SWEEP_LEVELS=${SWEEP_LEVELS:-10 30 50 70 90}
CONNS=${CONNS:-50}
ZIPF_OBJECTS=${ZIPF_OBJECTS:-10000}
ZIPF_S=${ZIPF_S:-1.0}
ORIGIN_PORT=${ORIGIN_PORT:-18380}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
ORIGIN_CPU=${ORIGIN_CPU:-1}
REFLEXD_ARGS=${REFLEXD_ARGS:-}
REFLEXD_CACHE_CONF=${REFLEXD_CACHE_CONF:-$HERE/conf/reflexd-cache.yaml}
PLOTS=${PLOTS:-1}
OUTDIR=${OUTDIR:-$ROOT/perf/results}
BENCH=$BUILD/reflex-bench
STAMP=$(date -u +%Y%m%d-%H%M)
[ "$QUICK" = 1 ] && STAMP+=-quick
# Two runs in one minute: the second gets a suffix rather than overwriting the first.
RESULT_DIR=$OUTDIR/$STAMP
i=2
while [ -e "$RESULT_DIR" ]; do RESULT_DIR=$OUTDIR/$STAMP-$i && i=$((i + 1)); done
STAMP=$(basename "$RESULT_DIR")

declare -A PORT PID NOTE TITLE
PORT[reflexd]=${REFLEXD_PORT:-18381}
PORT[nginx]=${NGINX_PORT:-18382}
PORT[haproxy]=${HAPROXY_PORT:-18383}
PORT[varnish]=${VARNISH_PORT:-18384}
TITLE[issue2]="Issue 2: pass-through, reflexd vs nginx (wrk)"
TITLE[pass]="Pass-through (no cache), 1 KiB"
TITLE[churn]="Connection per request (pass-through, 1 KiB)"
TITLE[hit1]="Cache hit, one object (1 KiB)"
TITLE[zipf]="Cache hit over $ZIPF_OBJECTS objects, Zipf $ZIPF_S (1 KiB each)"
TITLE[hitchurn]="Cache hit, connection per request (1 KiB)"
TITLE[loadgen]="reflex-bench vs wrk (issue 4 target)"

# The origin's Cache-Control decides what a server may cache (reflex-origin sets it
# from the query, docs/origin.md); the servers' configs only keep /pass/ away from
# their cache code (conf/*).
CC_HIT='cc=public,max-age=3600'
PASS_PATH='/pass/1k?cc=no-store'
HIT_PATH="/hit/one?$CC_HIT"
# Its own object, so that it is filled by its own warm-up whatever ran before.
HITCHURN_PATH="/hit/churn?$CC_HIT"
SWEEP_ON=${SWEEP_ON:-pass}
case $SWEEP_ON in
pass) SWEEP_PATH=$PASS_PATH SWEEP_WHAT=pass-through ;;
hit1) SWEEP_PATH=$HIT_PATH SWEEP_WHAT="cache hit, one object" ;;
*) bench_die "SWEEP_ON must be pass or hit1" ;;
esac
TITLE[sweep]="Latency vs load ($SWEEP_WHAT, open loop)"

has() { case " $1 " in *" $2 "*) return 0 ;; esac; return 1; }

# ---- what runs -------------------------------------------------------------------------
for s in $SCENARIOS; do
	[ -n "${TITLE[$s]:-}" ] || bench_die "unknown scenario '$s' (known: ${!TITLE[*]})"
done
# The sweep's levels are fractions of each server's peak in the swept scenario.
has "$SCENARIOS" sweep && ! has "$SCENARIOS" "$SWEEP_ON" && SCENARIOS="$SWEEP_ON $SCENARIOS"
for t in $TARGETS; do
	[ -n "${PORT[$t]:-}" ] || bench_die "unknown target '$t' (known: reflexd nginx haproxy varnish)"
done
tools="curl taskset ss"
has "$TARGETS" nginx && tools+=" nginx"
has "$TARGETS" haproxy && tools+=" haproxy"
has "$TARGETS" varnish && tools+=" varnishd"
{ has "$SCENARIOS" issue2 || has "$SCENARIOS" loadgen; } && tools+=" wrk"
has "$SCENARIOS" loadgen && tools+=" nginx"
for tool in $tools; do
	command -v "$tool" >/dev/null || bench_die "$tool not found (make deps installs it)"
done
[ "$(nproc)" -ge 2 ] || bench_die "needs 2 CPUs (server on one, load generator on the other)"
for b in reflex-origin reflex-bench; do
	[ -x "$BUILD/$b" ] || bench_die "$BUILD/$b not built (make $BUILD/$b)"
done
! has "$TARGETS" reflexd || [ -x "$BUILD/reflexd" ] || bench_die "$BUILD/reflexd not built"
ports=("$ORIGIN_PORT")
for t in $TARGETS; do ports+=("${PORT[$t]}"); done
require_free_ports "${ports[@]}"
if [ "$PLOTS" = 1 ] && ! command -v gnuplot >/dev/null; then
	bench_log "gnuplot not installed: no plots (make deps installs gnuplot-nox)"
	PLOTS=0
fi
CACHE_SCEN=0
{ has "$SCENARIOS" hit1 || has "$SCENARIOS" zipf || has "$SCENARIOS" hitchurn; } && CACHE_SCEN=1

bench_init
# Varnish's and nginx's workers drop root: they must reach their files in the run dir.
chmod 755 "$RUN_DIR"
mkdir -p "$RUN_DIR/raw"
MACHINE=$(machine_desc "$BUILD")
SERVICES=$("$HERE/system-services.sh" status | paste -sd ';' | sed 's/;/; /g')
bench_log "run directory $RUN_DIR; scenarios: $SCENARIOS; servers: $TARGETS"
bench_log "$REPS x ${DUR}s per server and scenario after ${WARM}s warm-up; results in $RESULT_DIR"

# ---- origin and servers ------------------------------------------------------------------
bench_start origin "$ORIGIN_CPU" "$ORIGIN_PORT" \
	"$BUILD/reflex-origin" --listen "127.0.0.1:$ORIGIN_PORT" --name origin
PID[origin]=$START_PID
ORIGIN_AT=$ORIGIN_CPU
origin_requests() { reflex_origin_requests "$ORIGIN_PORT"; }

# pin_tree PID CPU: move a running server (every process and thread) to CPU.
pin_tree() {
	local p
	for p in $(proc_tree "$1"); do taskset -a -p -c "$2" "$p" >/dev/null; done
}

REFLEXD_CONF=
REFLEXD_CACHE=no
if has "$TARGETS" reflexd && [ "$CACHE_SCEN" = 1 ]; then
	# reflexd's cache is enabled by a config section (docs/config.md); use it when this
	# reflexd accepts it, otherwise run without and say so in every cache row.
	{ echo "workers: 1"; cat "$REFLEXD_CACHE_CONF"; } >"$RUN_DIR/reflexd-cache.yaml"
	if "$BUILD/reflexd" --config "$RUN_DIR/reflexd-cache.yaml" --listen "127.0.0.1:${PORT[reflexd]}" \
		--upstream "127.0.0.1:$ORIGIN_PORT" --admin off --check-config >"$RUN_DIR/reflexd-check.log" 2>&1; then
		REFLEXD_CONF=$RUN_DIR/reflexd-cache.yaml
		REFLEXD_CACHE=yes
	else
		bench_log "reflexd refuses $(basename "$REFLEXD_CACHE_CONF"): $(head -1 "$RUN_DIR/reflexd-check.log"); no cache"
		if grep -q '^#\+ `cache' "$ROOT/docs/config.md" 2>/dev/null; then
			NOTE[reflexd]="no cache: $(basename "$REFLEXD_CACHE_CONF") refused, $(head -1 "$RUN_DIR/reflexd-check.log" |
				sed 's/^reflexd: [^:]*:\([0-9]*\): /line \1: /' | tr '|' '/') (pass-through)"
		else
			NOTE[reflexd]="no cache yet (pass-through)"
		fi
	fi
fi

for t in $TARGETS; do
	p=${PORT[$t]}
	case $t in
	reflexd)
		# shellcheck disable=SC2086 # REFLEXD_ARGS is a list of words
		bench_start reflexd "$PROXY_CPU" "$p" "$BUILD/reflexd" ${REFLEXD_CONF:+--config "$REFLEXD_CONF"} \
			--listen "127.0.0.1:$p" --upstream "127.0.0.1:$ORIGIN_PORT" --workers 1 --admin off $REFLEXD_ARGS
		;;
	nginx)
		mkdir -p "$RUN_DIR/nginx/tmp" "$RUN_DIR/nginx/cache"
		chmod 1777 "$RUN_DIR/nginx/tmp" "$RUN_DIR/nginx/cache"
		sed -e "s/@PROXY_PORT@/$p/g" -e "s/@ORIGIN_PORT@/$ORIGIN_PORT/g" \
			"$HERE/conf/nginx-proxy.conf" >"$RUN_DIR/nginx/nginx-proxy.conf"
		bench_start nginx "$PROXY_CPU" "$p" nginx -p "$RUN_DIR/nginx/" -c nginx-proxy.conf -g 'daemon off;'
		;;
	haproxy)
		sed -e "s/@PROXY_PORT@/$p/g" -e "s/@ORIGIN_PORT@/$ORIGIN_PORT/g" \
			"$HERE/conf/haproxy.cfg" >"$RUN_DIR/haproxy.cfg"
		bench_start haproxy "$PROXY_CPU" "$p" haproxy -db -f "$RUN_DIR/haproxy.cfg"
		;;
	varnish)
		sed -e "s/@ORIGIN_PORT@/$ORIGIN_PORT/g" "$HERE/conf/varnish.vcl" >"$RUN_DIR/varnish.vcl"
		chmod 644 "$RUN_DIR/varnish.vcl"
		bench_start varnish "$PROXY_CPU" "$p" varnishd -F -a "127.0.0.1:$p" -f "$RUN_DIR/varnish.vcl" \
			-s malloc,256m -n "$RUN_DIR/varnish-state" -T none -p thread_pools=1
		;;
	esac
	PID[$t]=$START_PID
done

# ---- checks --------------------------------------------------------------------------------
read -r code size < <(http_get "http://127.0.0.1:$ORIGIN_PORT$PASS_PATH" "$RUN_DIR/origin.body")
[ "$code" = 200 ] && [ "$size" = 1024 ] || bench_die "origin answered $code with $size bytes (want 200, 1024)"
checks=()
# check_path SERVER PATH: 3 GETs through SERVER, each 200 with the origin's 1024 bytes;
# prints how many of them reached the origin.
check_path() {
	local t=$1 path=$2 before after i
	before=$(origin_requests)
	for i in 1 2 3; do
		read -r code size < <(http_get "http://127.0.0.1:${PORT[$t]}$path" "$RUN_DIR/$t.body")
		[ "$code" = 200 ] && [ "$size" = 1024 ] ||
			bench_die "$t answered $code with $size bytes for $path (want 200, 1024); log: $RUN_DIR/$t.log"
		cmp -s "$RUN_DIR/$t.body" "$RUN_DIR/origin.body" || bench_die "$t's body for $path differs from the origin's"
	done
	after=$(origin_requests)
	[ -n "$before" ] && [ -n "$after" ] || bench_die "cannot read the origin's request counter"
	echo $((after - before))
}
for t in $TARGETS; do
	n=$(check_path "$t" "/pass/check?cc=no-store") || bench_die "checking $t failed (above)"
	[ "$n" -eq 3 ] || bench_die "3 pass-through requests through $t reached the origin $n times (want 3)"
	checks+=("$t: 3 × GET /pass/check?cc=no-store → 200, the origin's 1024 bytes, 3 requests at the origin")
	if [ "$CACHE_SCEN" = 1 ]; then
		n=$(check_path "$t" "/hit/check?$CC_HIT") || bench_die "checking $t failed (above)"
		if [ "$n" -eq 1 ]; then
			checks+=("$t: 3 × GET /hit/check?$CC_HIT → 200, 1024 bytes, 1 request at the origin (cached)")
		elif [ "$t" = reflexd ]; then
			[ "$REFLEXD_CACHE" = yes ] && NOTE[reflexd]="cache enabled but not effective: every request reached the origin (pass-through)"
			checks+=("$t: 3 × GET /hit/check?$CC_HIT → 200, 1024 bytes, $n requests at the origin: ${NOTE[reflexd]}")
		else
			bench_die "3 cacheable requests through $t reached the origin $n times (want 1)"
		fi
	fi
	bench_log "check $t: ok${NOTE[$t]:+ (${NOTE[$t]})}"
done

# ---- measuring ------------------------------------------------------------------------------
RUNS=$RUN_DIR/runs.tsv
printf 'scenario\tserver\trep\tlevel\trate\trps\tp50_us\tp90_us\tp99_us\tp999_us\tmax_us\trequests\terrors\tserver_pct\tload_pct\torigin_pct\torigin_reqs\tother_pct\tloadavg\torigin_cpu\tserver_core_pct\tload_core_pct\tfile\n' >"$RUNS"

# wait_quiet: before a measured run, wait (at most QUIET_WAIT s, and QUIET_BUDGET s over the
# whole run) for one second in which the rest of the machine uses at most QUIET_PCT % of a
# core. Our own servers are idle between runs, so busy time in /proc/stat is the others'.
QUIET_SPENT=0
wait_quiet() {
	local start=$SECONDS b0 b1 used
	[ "$QUIET_WAIT" -gt 0 ] || return 0
	while :; do
		b0=$(busy_ticks)
		sleep 1
		b1=$(busy_ticks)
		used=$(pct $((b1 - b0)) 1)
		[ "$used" -le "$QUIET_PCT" ] && break
		if [ $((SECONDS - start)) -ge "$QUIET_WAIT" ] || [ $((QUIET_SPENT + SECONDS - start)) -ge "$QUIET_BUDGET" ]; then
			bench_log "machine still busy (others use $used % of a core); measuring anyway (see other CPU)"
			break
		fi
	done
	QUIET_SPENT=$((QUIET_SPENT + SECONDS - start))
}

# run_one SCENARIO SERVER REP LEVEL RATE wrk|rb SECONDS ARGS...: one load-generator run
# against SERVER pinned to LOAD_CPU (wrk ARGS: URL [HEADER]; rb ARGS: reflex-bench's),
# with the CPU every party used; appends a line to $RUNS unless REP is "warm".
run_one() {
	local scen=$1 t=$2 rep=$3 lvl=$4 rate=$5 kind=$6 secs=$7
	shift 7
	local out="$RUN_DIR/raw/$scen-$t-$rep"
	[ "$lvl" != - ] && out+="-$lvl"
	if [ "$kind" = wrk ]; then out+=.txt; else out+=.json; fi
	local p0 o0 r0 b0 t0 p1 o1 r1 b1 t1 sc0 sc1 lc0 lc1 el load lt other rps p50 p90 p99 p999 max n err
	[ "$rep" = warm ] || wait_quiet
	load=$(cut -d' ' -f1 /proc/loadavg)
	p0=$(tree_ticks "${PID[$t]}") o0=$(tree_ticks "${PID[origin]}") r0=$(origin_requests)
	b0=$(busy_ticks) sc0=$(core_ticks "$PROXY_CPU") lc0=$(core_ticks "$LOAD_CPU") t0=$(now_s)
	if [ "$kind" = wrk ]; then
		run_wrk "$LOAD_CPU" "$CONNS" "$secs" "$@" "$out" "" 2>/dev/null ||
			bench_die "wrk failed against $t: $(tail -3 "$out")"
	else
		run_reflex_bench "$BENCH" "$LOAD_CPU" "$out" "$secs" "$@" ||
			grep -q '"requests_per_second"' "$out" ||
			bench_die "reflex-bench failed against $t: $(tail -3 "$out")"
	fi
	t1=$(now_s) b1=$(busy_ticks) sc1=$(core_ticks "$PROXY_CPU") lc1=$(core_ticks "$LOAD_CPU")
	kill -0 "${PID[$t]}" 2>/dev/null ||
		bench_die "$t exited during $scen (log: $RUN_DIR/$t.log): $(tail -3 "$RUN_DIR/$t.log")"
	p1=$(tree_ticks "${PID[$t]}") o1=$(tree_ticks "${PID[origin]}") r1=$(origin_requests)
	[ "$rep" = warm ] && return 0
	el=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
	if [ "$kind" = wrk ]; then
		read -r rps p50 p90 p99 n err < <(wrk_parse "$out")
		p999=- max=-
	else
		rps=$(json_num "$out" requests_per_second) p50=$(json_num "$out" p50)
		p90=$(json_num "$out" p90) p99=$(json_num "$out" p99) p999=$(json_num "$out" p999)
		max=$(json_num "$out" max) n=$(json_num "$out" requests) err=$(json_num "$out" total)
	fi
	lt=$(cat "$out.ticks")
	# Everything else the machine ran meanwhile (other tenants, unattributed kernel work):
	# a noise flag, not a measurement.
	other=$((b1 - b0 - (p1 - p0) - lt - (o1 - o0)))
	[ "$other" -lt 0 ] && other=0
	printf '%s\t' "$scen" "$t" "$rep" "$lvl" "$rate" "$rps" "$p50" "$p90" "$p99" "$p999" "$max" "$n" "$err" \
		"$(pct $((p1 - p0)) "$el")" "$(pct "$lt" "$el")" "$(pct $((o1 - o0)) "$el")" \
		$((r1 - r0)) "$(pct "$other" "$el")" "$load" "$ORIGIN_AT" \
		"$(pct $((sc1 - sc0)) "$el")" "$(pct $((lc1 - lc0)) "$el")" >>"$RUNS"
	printf '%s\n' "$out" >>"$RUNS"
	bench_log "$scen $t rep $rep$([ "$rate" != - ] && echo " at $rate req/s" || true): $(fmt_int "$rps") req/s," \
		"P50 $(fmt_us "$p50"), P99 $(fmt_us "$p99")$([ "$p999" != - ] && echo ", P99.9 $(fmt_us "$p999")"), errors $err"
}

# closed_scenario SCENARIO SERVERS ARGS...: warm-up, then REPS interleaved closed-loop
# reflex-bench runs per server; ARGS go to reflex-bench before the URL, "PATH" is the
# request target (or "/" with a request list).
closed_scenario() {
	local scen=$1 servers=$2 path=$3 t rep
	shift 3
	for t in $servers; do
		bench_log "$scen: warm-up $t (${WARM}s)"
		run_one "$scen" "$t" warm - - rb "$WARM" -t 1 -c "$CONNS" -d "$WARM" "$@" "http://127.0.0.1:${PORT[$t]}$path"
	done
	for rep in $(seq "$REPS"); do
		for t in $servers; do
			run_one "$scen" "$t" "$rep" - - rb "$DUR" -t 1 -c "$CONNS" -d "$DUR" "$@" "http://127.0.0.1:${PORT[$t]}$path"
		done
	done
}

ISSUE2_SERVERS=
for t in reflexd nginx; do has "$TARGETS" "$t" && ISSUE2_SERVERS+="$t "; done
for scen in $SCENARIOS; do
	case $scen in
	issue2)
		[ -n "$ISSUE2_SERVERS" ] || continue
		# Two placements of the origin: sharing CPU 1 with wrk (the proxy owns CPU 0), and
		# sharing CPU 0 with the proxy (wrk owns CPU 1). Which one limits is in the tables.
		for ocpu in "$LOAD_CPU" "$PROXY_CPU"; do
			pin_tree "${PID[origin]}" "$ocpu"
			ORIGIN_AT=$ocpu
			for t in $ISSUE2_SERVERS; do
				bench_log "issue2 (origin on CPU $ocpu): warm-up $t (${WARM}s)"
				run_one "issue2-o$ocpu" "$t" warm - - wrk "$WARM" "http://127.0.0.1:${PORT[$t]}$PASS_PATH"
			done
			for rep in $(seq "$REPS"); do
				for t in $ISSUE2_SERVERS; do
					run_one "issue2-o$ocpu" "$t" "$rep" - - wrk "$DUR" "http://127.0.0.1:${PORT[$t]}$PASS_PATH"
				done
			done
		done
		pin_tree "${PID[origin]}" "$ORIGIN_CPU"
		ORIGIN_AT=$ORIGIN_CPU
		;;
	pass) closed_scenario pass "$TARGETS" "$PASS_PATH" ;;
	churn) closed_scenario churn "$TARGETS" "$PASS_PATH" --churn ;;
	hit1) closed_scenario hit1 "$TARGETS" "$HIT_PATH" ;;
	zipf)
		LIST=$RUN_DIR/zipf-requests.txt
		awk -v n="$ZIPF_OBJECTS" -v cc="$CC_HIT" 'BEGIN {
			print "# bench.sh zipf: rank i = /hit/z<i> (the first is the most popular)"
			for (i = 1; i <= n; i++) printf "GET /hit/z%d?%s\n\n", i, cc }' >"$LIST"
		# Fill every cache with all objects first (each requested once, 8 keep-alive
		# connections), so that the measured runs are hits only; the origin counter in the
		# table shows it.
		for t in $TARGETS; do
			awk -v n="$ZIPF_OBJECTS" -v cc="$CC_HIT" -v u="http://127.0.0.1:${PORT[$t]}" 'BEGIN {
				for (i = 1; i <= n; i++) printf "url = \"%s/hit/z%d?%s\"\noutput = \"/dev/null\"\n", u, i, cc }' \
				>"$RUN_DIR/zipf-fill-$t.curl"
			before=$(origin_requests)
			timeout 300 taskset -c "$LOAD_CPU" curl -s --fail --parallel --parallel-max 8 \
				-K "$RUN_DIR/zipf-fill-$t.curl" >"$RUN_DIR/zipf-fill-$t.log" 2>&1 ||
				bench_die "filling $t's cache failed: $(tail -3 "$RUN_DIR/zipf-fill-$t.log")"
			n=$(($(origin_requests) - before))
			bench_log "zipf: filled $t with $ZIPF_OBJECTS objects ($n requests at the origin)"
			checks+=("$t: zipf fill, $ZIPF_OBJECTS objects requested once each → $n requests at the origin")
		done
		closed_scenario zipf "$TARGETS" / --requests "$LIST" --zipf "$ZIPF_S"
		;;
	hitchurn) closed_scenario hitchurn "$TARGETS" "$HITCHURN_PATH" --churn ;;
	sweep)
		declare -A PEAK
		for t in $TARGETS; do
			# shellcheck disable=SC2046 # median takes the values as words
			PEAK[$t]=$(median $(awk -F'\t' -v s="$SWEEP_ON" -v t="$t" '$1 == s && $2 == t { print $6 }' "$RUNS"))
		done
		for rep in $(seq "$REPS"); do
			for lvl in $SWEEP_LEVELS; do
				for t in $TARGETS; do
					rate=$(awk -v p="${PEAK[$t]}" -v l="$lvl" 'BEGIN { r = int(p * l / 100); print (r < 100) ? 100 : r }')
					run_one sweep "$t" "$rep" "$lvl" "$rate" rb "$((SWEEP_DUR + SWEEP_WARM))" -t 1 -c "$CONNS" \
						-d "$SWEEP_DUR" -w "$SWEEP_WARM" -R "$rate" "http://127.0.0.1:${PORT[$t]}$SWEEP_PATH"
				done
			done
		done
		;;
	loadgen) ;; # after the report below: it starts its own server
	esac
done

# ---- tables ---------------------------------------------------------------------------------
# One pass over $RUNS: median, min, max and sum of every numeric column per (scenario,
# server, level), so that the tables below need no process per cell.
declare -A S_MED S_MIN S_MAX S_SUM
while IFS=$'\t' read -r s t l c v_med v_min v_max v_sum; do
	k="$s|$t|$l|$c"
	S_MED[$k]=$v_med S_MIN[$k]=$v_min S_MAX[$k]=$v_max S_SUM[$k]=$v_sum
done < <(awk -F'\t' 'NR == 1 { for (i = 1; i <= NF; i++) name[i] = $i; nf = NF; next }
	{ for (i = 5; i <= nf; i++) {
		if ($i == "-" || name[i] == "file") continue
		k = $1 SUBSEP $2 SUBSEP $4 SUBSEP i; m = ++n[k]; x = $i + 0
		for (j = m - 1; j >= 1 && v[k, j] > x; j--) v[k, j + 1] = v[k, j]   # insertion sort
		v[k, j + 1] = x; s[k] += x } }
	END { for (k in n) { m = n[k]; split(k, p, SUBSEP)
		med = (m % 2) ? v[k, (m + 1) / 2] : (v[k, m / 2] + v[k, m / 2 + 1]) / 2
		printf "%s\t%s\t%s\t%s\t%.10g\t%.10g\t%.10g\t%.10g\n", p[1], p[2], p[3], name[p[4]], med, v[k, 1], v[k, m], s[k] } }' "$RUNS")

# vals SCENARIO SERVER COLUMN [LEVEL]: that column's values over the repetitions.
vals() {
	awk -F'\t' -v s="$1" -v t="$2" -v c="$3" -v l="${4:--}" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == c) k = i; next }
		$1 == s && $2 == t && $4 == l { print $k }' "$RUNS"
}
# med / sum SCENARIO SERVER COLUMN [LEVEL]: median / sum over the repetitions (0 if none).
med() { echo "${S_MED[$1|$2|${4:--}|$3]:-0}"; }
sum() { echo "${S_SUM[$1|$2|${4:--}|$3]:-0}"; }
# spread_of KEY: (max - min) / median of the repetitions, in percent.
spread_of() {
	awk -v a="${S_MIN[$1]}" -v b="${S_MAX[$1]}" -v m="${S_MED[$1]}" 'BEGIN { printf "%.0f%%", (m > 0) ? 100 * (b - a) / m : 0 }'
}
# cell_us / cell_int SCENARIO SERVER COLUMN [LEVEL]: "median (spread)" of the repetitions.
cell_us() {
	local k="$1|$2|${4:--}|$3"
	[ -n "${S_MED[$k]:-}" ] || { echo -; return; }
	if [ "$REPS" -gt 1 ]; then echo "$(fmt_us "${S_MED[$k]}") ($(spread_of "$k"))"; else fmt_us "${S_MED[$k]}"; fi
}
cell_int() {
	local k="$1|$2|${4:--}|$3"
	[ -n "${S_MED[$k]:-}" ] || { echo -; return; }
	if [ "$REPS" -gt 1 ]; then echo "$(fmt_int "${S_MED[$k]}") ($(spread_of "$k"))"; else fmt_int "${S_MED[$k]}"; fi
}
# limit SERVER% LOAD% ORIGIN% OTHER% ORIGIN_CPU SERVER_CORE% LOAD_CORE%: which core was full.
# A core counts as full when its processes reached 90 %, or, on a quiet machine (OTHER < 25 %),
# when the core as a whole did (softirq included, see core_ticks; the cell then gives that figure).
limit() {
	awk -v p="$1" -v l="$2" -v o="$3" -v x="$4" -v oc="$5" -v sc="${6:-0}" -v lc_pct="${7:-0}" \
		-v pc="$PROXY_CPU" -v lc="$LOAD_CPU" 'BEGIN {
		c0 = p + (oc == pc ? o : 0); c1 = l + (oc == lc ? o : 0)
		if (c0 >= 90) print "server" (oc == pc && o >= 5 ? " + origin" : "") " (CPU " pc ")"
		else if (c1 >= 90) print "load gen." (oc == lc && o >= 5 ? " + origin" : "") " (CPU " lc ")"
		else if (x >= 25) print "other tenants (noisy)"
		else if (sc >= 90) print "server" (oc == pc && o >= 5 ? " + origin" : "") " (CPU " pc " at " sc " %)"
		else if (lc_pct >= 90) print "load gen." (oc == lc && o >= 5 ? " + origin" : "") " (CPU " lc " at " lc_pct " %)"
		else print "neither core full" }'
}
name_cell() { echo "$1${NOTE[$1]:+ — **${NOTE[$1]}**}"; }
# ratio_best_peer SCENARIO SERVER: req/s over the best req/s of the other servers.
ratio_best_peer() {
	local best=0 r u
	for u in $TARGETS; do
		[ "$u" = "$2" ] && continue
		r=$(med "$1" "$u" rps)
		best=$(awk -v a="$best" -v b="$r" 'BEGIN { print (b > a) ? b : a }')
	done
	awk -v a="$(med "$1" "$2" rps)" -v b="$best" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'
}

# table_closed SCENARIO: the markdown table of a closed-loop scenario.
table_closed() {
	local s=$1 t pp lp op xp oc scp lcp rq oq
	echo "| server | req/s | P50 | P99 | P99.9 | ratio to best peer | req/s per server core | server CPU | load gen. CPU | at origin | limit | errors |"
	echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
	for t in $TARGETS; do
		pp=$(med "$s" "$t" server_pct) lp=$(med "$s" "$t" load_pct) op=$(med "$s" "$t" origin_pct)
		xp=$(med "$s" "$t" other_pct) oc=$(med "$s" "$t" origin_cpu)
		scp=$(med "$s" "$t" server_core_pct) lcp=$(med "$s" "$t" load_core_pct)
		rq=$(sum "$s" "$t" requests) oq=$(sum "$s" "$t" origin_reqs)
		echo "| $(name_cell "$t") | $(cell_int "$s" "$t" rps) | $(cell_us "$s" "$t" p50_us) | $(cell_us "$s" "$t" p99_us) |" \
			"$(cell_us "$s" "$t" p999_us) | $(ratio_best_peer "$s" "$t") |" \
			"$(fmt_int "$(awk -v r="$(med "$s" "$t" rps)" -v p="$pp" 'BEGIN { print (p > 0) ? r * 100 / p : 0 }')") |" \
			"${pp%.*} % | ${lp%.*} % | $(awk -v o="$oq" -v r="$rq" 'BEGIN { printf (r > 0) ? "%.1f %%" : "-", 100 * o / r }') |" \
			"$(limit "$pp" "$lp" "$op" "$xp" "$oc" "$scp" "$lcp") | $(sum "$s" "$t" errors) |"
	done
}

# table_issue2 SCENARIO: reflexd vs nginx with wrk (issue 2's comparison).
table_issue2() {
	local s=$1 t pp wp op xp oc scp lcp nginx_rps ratio
	nginx_rps=$(has "$ISSUE2_SERVERS" nginx && med "$s" nginx rps || echo 0)
	echo "| server | req/s | P50 | P99 | ratio vs nginx | proxy CPU | wrk CPU | origin CPU | other CPU | limit | errors |"
	echo "|---|---|---|---|---|---|---|---|---|---|---|"
	for t in $ISSUE2_SERVERS; do
		pp=$(med "$s" "$t" server_pct) wp=$(med "$s" "$t" load_pct) op=$(med "$s" "$t" origin_pct)
		xp=$(med "$s" "$t" other_pct) oc=$(med "$s" "$t" origin_cpu)
		scp=$(med "$s" "$t" server_core_pct) lcp=$(med "$s" "$t" load_core_pct)
		ratio=$(awk -v a="$(med "$s" "$t" rps)" -v b="$nginx_rps" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')
		echo "| $t | $(cell_int "$s" "$t" rps) | $(cell_us "$s" "$t" p50_us) | $(cell_us "$s" "$t" p99_us) | **$ratio** |" \
			"${pp%.*} % | ${wp%.*} % | ${op%.*} % | ${xp%.*} % | $(limit "$pp" "$wp" "$op" "$xp" "$oc" "$scp" "$lcp") | $(sum "$s" "$t" errors) |"
	done
}

table_sweep() {
	local t lvl
	echo "| server | load | rate | req/s | P50 | P99 | P99.9 | max | server CPU | load gen. CPU | errors |"
	echo "|---|---|---|---|---|---|---|---|---|---|---|"
	for t in $TARGETS; do
		for lvl in $SWEEP_LEVELS; do
			echo "| $t | $lvl % | $(fmt_int "$(med sweep "$t" rate "$lvl")") | $(cell_int sweep "$t" rps "$lvl") |" \
				"$(cell_us sweep "$t" p50_us "$lvl") | $(cell_us sweep "$t" p99_us "$lvl") | $(cell_us sweep "$t" p999_us "$lvl") |" \
				"$(cell_us sweep "$t" max_us "$lvl") | $(printf %.0f "$(med sweep "$t" server_pct "$lvl")") % |" \
				"$(printf %.0f "$(med sweep "$t" load_pct "$lvl")") % | $(sum sweep "$t" errors "$lvl") |"
		done
	done
}

# Every repetition, for the record (one awk: a table of ~100 rows).
table_runs() {
	echo "| scenario | server | rep | load | rate | req/s | P50 | P90 | P99 | P99.9 | requests | at origin | errors | server CPU | load gen. CPU | origin CPU (on) | other CPU | load avg |"
	echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
	tail -n +2 "$RUNS" | awk -F'\t' '
	function us(u) { if (u == "-") return "-"; if (u < 1000) return sprintf("%d us", u + 0.5)
		if (u < 1e6) return sprintf("%.2f ms", u / 1000); return sprintf("%.2f s", u / 1e6) }
	function int3(n,  s) { n = sprintf("%.0f", n); s = ""
		while (length(n) > 3) { s = "," substr(n, length(n) - 2) s; n = substr(n, 1, length(n) - 3) }
		return n s }
	{ printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s %% | %s %% | %s %% (%s) | %s %% | %s |\n",
		$1, $2, $3, $4, $5, int3($6), us($7), us($8), us($9), us($10), int3($12), int3($17), $13,
		$14, $15, $16, $20, $18, $19 }'
}

# ---- plots ------------------------------------------------------------------------------------
declare -A COLOR=([reflexd]='#d62728' [nginx]='#2ca02c' [haproxy]='#1f77b4' [varnish]='#9467bd')
# percentile_curve JSON: "x latency_ms" rows from reflex-bench's histogram, x = 1/(1-p)
# so that P90, P99, P99.9 ... are evenly spaced (the HdrHistogram plot).
percentile_curve() {
	grep -o '"buckets":\[.*\]' "$1" | grep -o '\[[0-9]*,[0-9]*\]' | tr -d '[]' |
		awk -F, '{ v[NR] = $1; c[NR] = $2; n += $2 } END {
			for (i = 1; i <= NR; i++) { s += c[i]; p = s / n; if (p > 0.99999) p = 0.99999
				printf "%.6f %.3f\n", 1 / (1 - p), v[i] / 1000 } }'
}
PLOT_FILES=()
# plot_percentiles SCENARIO LEVEL RANKCOL TITLE: one curve per server and repetition; the
# median repetition (by RANKCOL) thick, the others thin: the spread is the gap between them.
plot_percentiles() {
	local s=$1 lvl=$2 rc=$3 title=$4 png="$RESULT_DIR/$1-percentiles.png" plot="" t f mid i dat
	for t in $TARGETS; do
		mapfile -t files < <(awk -F'\t' -v s="$s" -v t="$t" -v l="$lvl" -v c="$rc" \
			'NR == 1 { for (i = 1; i <= NF; i++) if ($i == c) k = i; next }
			$1 == s && $2 == t && $4 == l { print $k "\t" $NF }' "$RUNS" | sort -g | cut -f2)
		[ ${#files[@]} -gt 0 ] || continue
		mid=$(((${#files[@]} - 1) / 2))
		for i in "${!files[@]}"; do
			f=${files[$i]}
			dat=$RUN_DIR/curve-$s-$t-$i.dat
			percentile_curve "$f" >"$dat"
			if [ "$i" = "$mid" ]; then
				plot+="${plot:+, }'$dat' using 1:2 with steps lw 2.5 lc rgb '${COLOR[$t]}' title '$t'"
			else
				plot+="${plot:+, }'$dat' using 1:2 with steps lw 0.7 lc rgb '${COLOR[$t]}' notitle"
			fi
		done
	done
	[ -n "$plot" ] || return 0
	gnuplot <<-EOF && PLOT_FILES+=("$png") || bench_log "gnuplot failed for $png"
		set terminal pngcairo size 900,520 font ',10'
		set output '$png'
		set title "$title"
		set logscale x
		set xtics ('50%%' 2, '90%%' 10, '99%%' 100, '99.9%%' 1000, '99.99%%' 10000, '99.999%%' 100000)
		set xlabel 'percentile'
		set ylabel 'latency (ms)'
		set logscale y
		set grid
		set key top left
		plot $plot
	EOF
}
# plot_sweep: P50 and P99 against the offered rate (an overloaded server shows at the rate
# it was offered, with the latency of its queue), medians with min-max bars.
plot_sweep() {
	local png=$RESULT_DIR/sweep.png plot="" t lvl dat k
	for t in $TARGETS; do
		dat=$RUN_DIR/sweep-$t.dat
		for lvl in $SWEEP_LEVELS; do
			k="sweep|$t|$lvl"
			echo "${S_MED[$k|rate]:-0} ${S_MED[$k|p50_us]:-0} ${S_MIN[$k|p50_us]:-0} ${S_MAX[$k|p50_us]:-0}" \
				"${S_MED[$k|p99_us]:-0} ${S_MIN[$k|p99_us]:-0} ${S_MAX[$k|p99_us]:-0}"
		done >"$dat"
		plot+="${plot:+, }'$dat' using 1:(\$5/1000):(\$6/1000):(\$7/1000) with yerrorlines lw 2 pt 7 lc rgb '${COLOR[$t]}' title '$t P99'"
		plot+=", '$dat' using 1:(\$2/1000):(\$3/1000):(\$4/1000) with yerrorlines lw 1 dt 2 pt 6 lc rgb '${COLOR[$t]}' title '$t P50'"
	done
	gnuplot <<-EOF && PLOT_FILES+=("$png") || bench_log "gnuplot failed for $png"
		set terminal pngcairo size 1000,560 font ',10'
		set output '$png'
		set title "Latency vs load: $SWEEP_WHAT, open loop at $SWEEP_LEVELS % of each server's own peak\n(medians; bars: min-max of $REPS repetition(s); latency from the intended send time)"
		set xlabel 'offered load (req/s)'
		set ylabel 'latency (ms)'
		set logscale y
		set grid
		set key outside right top
		plot $plot
	EOF
}

mkdir -p "$RESULT_DIR"
if [ "$PLOTS" = 1 ]; then
	for s in pass churn hit1 zipf hitchurn; do
		has "$SCENARIOS" "$s" && plot_percentiles "$s" - rps "${TITLE[$s]}: latency by percentile, closed loop (thick: median run)"
	done
	if has "$SCENARIOS" sweep; then
		plot_sweep
		mid=$(echo "$SWEEP_LEVELS" | awk '{ print $(int((NF + 1) / 2)) }')
		plot_percentiles sweep "$mid" p99_us "${SWEEP_WHAT^}, open loop at $mid % of each server's peak: latency by percentile"
	fi
fi

# ---- report ------------------------------------------------------------------------------------
{
	echo "# Machine"
	echo
	echo "$MACHINE"
	echo "| system services | ${SERVICES:-none installed} |"
	echo "| placement | servers on CPU $PROXY_CPU (all threads, taskset); load generator on CPU $LOAD_CPU; origin (reflex-origin, 1 worker) on CPU $ORIGIN_CPU, except where a table says otherwise |"
	echo "| run | $REPS interleaved repetition(s) of ${DUR}s per server and scenario, after ${WARM}s of warm-up; sweep: ${SWEEP_DUR}s after ${SWEEP_WARM}s |"
	echo
	echo "Server configurations: \`perf/scenarios/conf/\` at the commit above (docs/bench.md explains them)."
} >"$RESULT_DIR/machine.md"

# write_scenario SCENARIO: $RESULT_DIR/SCENARIO.md, also appended to the index.
INDEX=$RUN_DIR/index.md
write_scenario() {
	local s=$1 f=$RESULT_DIR/$1.md p
	{
		echo "## ${TITLE[$s]}"
		echo
		case $s in
		issue2)
			echo "GET $PASS_PATH (origin: 200, 1024 bytes, no-store) through reflexd and nginx;"
			echo "\`wrk -t1 -c$CONNS --latency\` on CPU $LOAD_CPU, proxy on CPU $PROXY_CPU. wrk is closed loop:"
			echo "its latencies at saturation are queueing and suffer from coordinated omission; compare"
			echo "them only between rows. Medians of $REPS run(s), (spread = (max - min) / median)."
			for oc in "$LOAD_CPU" "$PROXY_CPU"; do
				echo
				if [ "$oc" = "$LOAD_CPU" ]; then
					echo "### Origin on CPU $oc, beside wrk (the proxy owns CPU $PROXY_CPU)"
					echo
					echo "The proxy's own core is never shared, so its CPU column says directly whether it was"
					echo "the limit; on two cores, wrk and the origin together usually fill CPU $LOAD_CPU first"
					echo "(limit column), and req/s is then a lower bound of the proxy's capacity."
				else
					echo "### Origin on CPU $oc, beside the proxy (wrk owns CPU $LOAD_CPU)"
					echo
					echo "wrk has a core to itself; proxy and origin share one, so req/s is what one core can"
					echo "do for proxy + origin together, and a cheaper proxy leaves more of it to the origin."
				fi
				echo
				table_issue2 "issue2-o$oc"
			done
			;;
		sweep)
			echo "Each server in open loop (\`reflex-bench -t1 -c$CONNS -R RATE\`, constant schedule,"
			echo "latency from each request's intended send time) at $SWEEP_LEVELS % of its own median"
			echo "\`$SWEEP_ON\` req/s from this run; GET $SWEEP_PATH. Medians of $REPS run(s) (spread)."
			echo "\`load gen. CPU\` near 100 % at a level means the load generator, not the server, set"
			echo "the latency there (in pass-through it shares CPU $LOAD_CPU with the origin)."
			echo
			table_sweep
			;;
		*)
			case $s in
			pass) echo "GET $PASS_PATH: the origin marks it no-store, the servers pass it through without a cache lookup." ;;
			churn) echo "GET $PASS_PATH with \`--churn\`: a new client connection per request (Connection: close); upstream connections stay pooled. One load-generator core opens a few tens of thousands of connections a second: when it is the limit, compare \`req/s per server core\`." ;;
			hit1) echo "GET $HIT_PATH: one object, cacheable for an hour; after the warm-up every request is a hit." ;;
			hitchurn) echo "GET $HITCHURN_PATH with \`--churn\`: a new client connection per request (Connection: close), every answer a cache hit (one object, filled by the warm-up). What is measured is mostly the cost of a TCP connection on both sides: accept, first read, the answer, the close. When the load generator is the limit, compare \`req/s per server core\`." ;;
			zipf) echo "$ZIPF_OBJECTS objects \`/hit/z<i>?$CC_HIT\`, requested with \`--requests LIST --zipf $ZIPF_S\` (rank 1 most popular); every cache was filled with all objects before the warm-up." ;;
			esac
			echo
			echo "\`reflex-bench -t1 -c$CONNS\` closed loop on CPU $LOAD_CPU. Each cell: median of $REPS run(s) (spread ="
			echo "(max - min) / median). \`ratio to best peer\` = req/s / the best req/s among the other servers."
			echo "\`at origin\` = requests that reached the origin / requests answered (100 % = passed through,"
			echo "0 % = all from cache). \`limit\` names the core that was full (≥ 90 % by its processes, or by the core as a whole in /proc/stat, softirq included: \`at N %\`)."
			echo
			table_closed "$s"
			;;
		esac
		for p in "$RESULT_DIR/$s-percentiles.png" "$RESULT_DIR/$s.png"; do
			[ -f "$p" ] && echo && echo "![$(basename "$p" .png)]($(basename "$p"))"
		done
		true
	} >"$f"
	{ cat "$f"; echo; } >>"$INDEX"
}

{
	echo "# Reflex benchmark $STAMP"
	echo
	[ "$QUICK" = 1 ] && echo "**QUICK run: 1 short repetition per server, for checking the suite, not for quoting.**" && echo
	echo "Machine, versions and placement: [machine.md](machine.md). Every run: [runs.md](runs.md)."
	echo "How to read this: [docs/bench.md](../../../docs/bench.md)."
	echo
} >"$INDEX"
for s in $SCENARIOS; do
	[ "$s" = loadgen ] && continue
	[ "$s" = issue2 ] && [ -z "$ISSUE2_SERVERS" ] && continue
	write_scenario "$s"
done
{
	echo "## Checks before measuring"
	echo
	for c in "${checks[@]}"; do echo "- $c"; done
} >>"$INDEX"
{
	echo "# Every run ($STAMP)"
	echo
	echo "\`at origin\` = requests the origin counted during the run; \`origin CPU (on)\` names the CPU it was on;"
	echo "\`other CPU\` = what the rest of the machine used meanwhile (a noise flag); \`load avg\` before the run."
	echo
	table_runs
} >"$RESULT_DIR/runs.md"
cp "$RUNS" "$RESULT_DIR/runs.tsv"
sed -i "s|$RUN_DIR/raw/||" "$RESULT_DIR/runs.tsv"

if has "$SCENARIOS" loadgen; then
	bench_stop_all # its own nginx needs CPU 0 and our servers are done
	bench_log "loadgen: reflex-bench vs wrk (perf/scenarios/loadgen-check.sh)"
	if QUICK=$QUICK REPS=$REPS DUR=$DUR OUT="$RESULT_DIR/loadgen.md" "$HERE/loadgen-check.sh" "$BUILD" >"$RUN_DIR/loadgen.out" 2>&1; then
		{ echo "## ${TITLE[loadgen]}"; echo; sed -n '/^| generator/,$p' "$RESULT_DIR/loadgen.md"; echo
		  echo "Details: [loadgen.md](loadgen.md)."; echo; } >>"$INDEX"
	else
		bench_log "loadgen check failed: $(tail -3 "$RUN_DIR/loadgen.out")"
		{ echo "## ${TITLE[loadgen]}"; echo; echo "The check failed: \`$(tail -1 "$RUN_DIR/loadgen.out")\`"; echo; } >>"$INDEX"
	fi
fi
[ ${#PLOT_FILES[@]} -gt 0 ] || [ "$PLOTS" = 0 ] || bench_log "no plots were drawn"
cp "$INDEX" "$RESULT_DIR/index.md"

# latest.md (linked from README) names only complete runs: every scenario and server, the
# default repetitions or more.
if [ "$QUICK" != 1 ] && [ "$SCENARIOS" = "$DEFAULT_SCENARIOS" ] && [ "$TARGETS" = "$DEFAULT_TARGETS" ] &&
	[ "$REPS" -ge 3 ]; then
	{
		echo "# Latest benchmark results"
		echo
		echo "[$STAMP]($(basename "$RESULT_DIR")/index.md) — taken on [this machine]($(basename "$RESULT_DIR")/machine.md)."
		echo "Written by \`make bench\` (perf/scenarios/bench.sh); see docs/bench.md for how to read it."
	} >"$OUTDIR/latest.md"
fi
cat "$RESULT_DIR/index.md"
bench_log "written to $RESULT_DIR/ (index.md, machine.md, runs.md, one .md per scenario, plots)"
