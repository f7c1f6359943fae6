#!/usr/bin/env bash
# perf/scenarios/ratelimit_bench.sh — the kernel drop path against the alternatives a user
# has, on one veth setup (a benchmark, never a test: it gates on nothing).
#
# usage: perf/scenarios/ratelimit_bench.sh [BUILD_DIR] [--runs N] [--seconds S]
#                                          [--cost-runs N] [--cost-only]
#
# Two network namespaces joined by a veth pair; reflexd (and its origin) in the gateway one,
# the load in the client one, pinned to one CPU. Per mode, a flood from ONE source address
# against a limit of 1 new connection/s (so almost everything is dropped), S seconds, N runs:
#
#   xdp        reflexd's limiter as a native XDP program on the veth (ratelimit.kernel)
#   tc         the same limiter as a tcx program
#   nftables   an nftables meter (per-source limit) in prerouting, reflexd not limiting
#   userspace  reflexd's accept-time limiter (no kernel layer); the load is full TCP
#              handshakes, since a raw SYN never reaches accept()
#   none       no limiter: the kernel's TCP stack answers every SYN with a SYN-ACK (SYN
#              cookies once the queue is full) — the cost of a SYN that nobody drops
#
# Reported per mode: the median over the runs of packets (connections for userspace) dropped
# per second, and CPU time per dropped packet: all CPUs' busy time (/proc/stat, everything
# included: the generator too, so compare rows, not absolute values) over the drops. Then
# the per-packet cost of the BPF program by BPF_PROG_TEST_RUN: `test_ratelimit --perf` run
# --cost-runs times (default 5) pinned to one CPU, each path's median and range, measured and
# net of the harness baseline (an XDP program that only returns), with the load average;
# --cost-only prints that table alone (no namespaces, no reflexd; about 2 s a run). Needs
# root, ip(8), nft(8), cc; the machine should be quiet — on a shared 2-vCPU VM the figures
# swing by ±30%.
set -u

BUILD=build
RUNS=3
SECS=3
COST_RUNS=5
COST_ONLY=0
while [ $# -gt 0 ]; do
	case "$1" in
	--runs) RUNS=$2; shift 2 ;;
	--seconds) SECS=$2; shift 2 ;;
	--cost-runs) COST_RUNS=$2; shift 2 ;;
	--cost-only) COST_ONLY=1; shift ;;
	-h|--help) sed -n '2,35p' "$0"; exit 0 ;;
	*) BUILD=$1; shift ;;
	esac
done

log() { printf '[ratelimit-bench %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# The "# perf" lines of several runs of `test_ratelimit --perf`, per path: median (min-max)
# of the measured ns/packet and of the net figure (measured - harness baseline).
cost_table() {
	local bin="$BUILD/tests/bpf/test_ratelimit" cpu out i
	[ -x "$bin" ] || { log "no $bin (make bpf): no per-packet cost table"; return 0; }
	cpu=$(($(nproc) - 1))
	out=$(mktemp /tmp/reflex-rlcost.XXXXXX)
	log "per-packet cost: $COST_RUNS runs of $bin --perf on CPU $cpu"
	for i in $(seq "$COST_RUNS"); do
		taskset -c "$cpu" "$bin" --perf | grep '^# perf' >>"$out"
	done
	echo
	echo "per-packet cost of the program (BPF_PROG_TEST_RUN, medians of $COST_RUNS runs, best of 3"
	echo "each; load average before: $LOAD0, after: $(cut -d' ' -f1-3 /proc/loadavg)):"
	awk '
	function med(s,   a, n, i, j, t) {
		n = split(s, a, " ")
		for (i = 2; i <= n; i++)
			for (j = i; j > 1 && a[j - 1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
		return sprintf("%5s (%s-%s)", a[int((n + 1) / 2)], a[1], a[n])
	}
	{
		for (i = 4; i <= NF && $i != "ns/packet"; i++) ;
		if (i > NF) next
		k = $3
		for (j = 4; j < i - 1; j++) k = k " " $j
		if (!(k in ns)) order[++n] = k
		ns[k] = ns[k] " " $(i - 1)
		if ($(i + 2) == "net") net[k] = net[k] " " $(i + 1)
	}
	END {
		printf "%-62s %-18s %s\n", "path", "ns/packet", "net of harness"
		for (i = 1; i <= n; i++)
			printf "%-62s %-18s %s\n", order[i], med(ns[order[i]]), order[i] in net ? med(net[order[i]]) : "-"
	}' "$out"
	rm -f "$out"
}

[ "$(id -u)" -eq 0 ] || die "needs root (namespaces, XDP, nftables)"
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
if [ "$COST_ONLY" = 1 ]; then
	cost_table
	exit 0
fi
for t in ip nft cc curl; do command -v $t >/dev/null || die "$t is not installed"; done
[ -x "$BUILD/reflexd" ] && [ -x "$BUILD/reflex-origin" ] || die "build $BUILD/reflexd first (make build)"

FLOOD="$BUILD/perf/rl-synflood"
if [ ! -x "$FLOOD" ] || [ perf/scenarios/ratelimit_synflood.c -nt "$FLOOD" ]; then
	mkdir -p "$BUILD/perf"
	cc -O2 -D_GNU_SOURCE -o "$FLOOD" perf/scenarios/ratelimit_synflood.c || die "cannot build the flooder"
fi

NS_GW=rbgw$$
NS_CL=rbcl$$
V_GW=rbg$$
V_CL=rbc$$
GW=10.215.0.1
CL=10.215.0.2
PORT=18080
ADMIN=18081
OPORT=18082
DIR=$(mktemp -d /tmp/reflex-rlbench.XXXXXX)
PIDS=()

STATS_WAS=$(sysctl -n kernel.bpf_stats_enabled 2>/dev/null || echo 0)
cleanup() {
	local p
	sysctl -qw kernel.bpf_stats_enabled="$STATS_WAS" 2>/dev/null
	for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
	ip netns del "$NS_GW" 2>/dev/null
	ip netns del "$NS_CL" 2>/dev/null
	rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ip netns add "$NS_GW" && ip netns add "$NS_CL" &&
	ip link add "$V_GW" netns "$NS_GW" type veth peer name "$V_CL" netns "$NS_CL" &&
	ip -n "$NS_GW" addr add $GW/24 dev "$V_GW" && ip -n "$NS_GW" link set "$V_GW" up &&
	ip -n "$NS_GW" link set lo up &&
	ip -n "$NS_CL" addr add $CL/24 dev "$V_CL" && ip -n "$NS_CL" link set "$V_CL" up &&
	ip -n "$NS_CL" link set lo up || die "cannot make the namespaces"
MAC_GW=$(ip -n "$NS_GW" -br link show "$V_GW" | awk '{print $3}')
MAC_CL=$(ip -n "$NS_CL" -br link show "$V_CL" | awk '{print $3}')
# the SYN-ACKs of the "none" mode must not be answered by RSTs that cost the gateway more
ip netns exec "$NS_GW" sysctl -qw net.ipv4.tcp_syncookies=1

ip netns exec "$NS_GW" "$BUILD/reflex-origin" --listen 127.0.0.1:$OPORT --name o >"$DIR/origin.log" 2>&1 &
PIDS+=($!)

# start_gw KERNEL_YAML: reflexd with the given ratelimit.kernel mapping
start_gw() {
	cat >"$DIR/gw.yaml" <<EOF
workers: 1
listen: ["$GW:$PORT"]
upstream: ["127.0.0.1:$OPORT"]
admin: {listen: "$GW:$ADMIN"}
log_level: warn
ratelimit:
  kernel: $1
EOF
	ip netns exec "$NS_GW" "$BUILD/reflexd" --config "$DIR/gw.yaml" >>"$DIR/reflexd.log" 2>&1 &
	GW_PID=$!
	PIDS+=($GW_PID)
	for _ in $(seq 100); do
		ip netns exec "$NS_CL" curl -s -o /dev/null "http://$GW:$ADMIN/healthz" && return 0
		sleep 0.05
	done
	die "reflexd did not start (see $DIR/reflexd.log)"
}
stop_gw() {
	kill -TERM "$GW_PID" 2>/dev/null
	wait "$GW_PID" 2>/dev/null
}

# busy jiffies of all CPUs
busy() { awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat; }
limits_json() { ip netns exec "$NS_CL" curl -s "http://$GW:$ADMIN/limits"; }
kernel_drops() { limits_json | grep -o '"dropped":{"deny":[0-9]*,"penalty":[0-9]*,"syn_rate":[0-9]*' | grep -o '[0-9]*$'; }
accept_refused() {
	ip netns exec "$NS_CL" curl -s "http://$GW:$ADMIN/metrics" |
		awk '/^reflex_ratelimit_accept_refused_total /{print $2}'
}
nft_drops() { ip netns exec "$NS_GW" nft list chain ip rb pre | grep -o 'packets [0-9]*' | awk '{print $2}'; }
# packets the gateway namespace sent (the SYN-ACKs of the "none" mode)
tcp_syns() { ip netns exec "$NS_GW" nstat -az IpOutRequests 2>/dev/null | awk '/IpOutRequests/{print $2}'; }

# run_time_ns and run_cnt of reflexd's program (kernel.bpf_stats_enabled during the run)
prog_stats() {
	bpftool prog show name "$1" 2>/dev/null | grep -o 'run_time_ns [0-9]* run_cnt [0-9]*' |
		awk '{t += $2; c += $4} END {print t + 0, c + 0}'
}

CLK=$(getconf CLK_TCK)
# one_run MODE: prints "dropped_per_s cpu_ns_per_drop"
one_run() {
	local mode=$1 before after b0 b1 out
	case $mode in
	xdp|tc) before=$(kernel_drops) ;;
	nftables) before=$(nft_drops) ;;
	userspace) before=$(accept_refused) ;;
	none) before=$(tcp_syns) ;;
	esac
	local p0=(0 0) p1=(0 0) prog=
	case $mode in xdp) prog=rl_xdp ;; tc) prog=rl_tc ;; esac
	[ -n "$prog" ] && p0=($(prog_stats $prog))
	b0=$(busy)
	if [ "$mode" = userspace ]; then
		out=$(ip netns exec "$NS_CL" taskset -c 0 "$FLOOD" connect $CL $GW $PORT "$SECS")
	else
		out=$(ip netns exec "$NS_CL" taskset -c 0 "$FLOOD" syn "$V_CL" "$MAC_CL" "$MAC_GW" $CL $GW $PORT "$SECS")
	fi
	b1=$(busy)
	[ -n "$prog" ] && p1=($(prog_stats $prog))
	sleep 0.2
	case $mode in
	xdp|tc) after=$(kernel_drops) ;;
	nftables) after=$(nft_drops) ;;
	userspace) after=$(accept_refused) ;;
	none) after=$(tcp_syns) ;;
	esac
	awk -v d=$((${after:-0} - ${before:-0})) -v s="$SECS" -v j=$((b1 - b0)) -v clk="$CLK" -v o="$out" \
		-v pt=$((p1[0] - p0[0])) -v pc=$((p1[1] - p0[1])) \
		'BEGIN { split(o, f, " "); printf "%.0f %.0f %.0f %.0f\n", d / s, d ? j * 1e9 / clk / d : 0,
			 f[2] / s, pc ? pt / pc : 0 }'
}

median() { sort -n | awk '{a[NR]=$1} END {print NR ? a[int((NR+1)/2)] : 0}'; }

declare -A PPS CPU LOAD PROG
run_mode() {
	local mode=$1 r res
	: >"$DIR/$mode.txt"
	for r in $(seq "$RUNS"); do
		res=$(one_run "$mode")
		log "$mode run $r: $res"
		echo "$res" >>"$DIR/$mode.txt"
	done
	PPS[$mode]=$(awk '{print $1}' "$DIR/$mode.txt" | median)
	CPU[$mode]=$(awk '{print $2}' "$DIR/$mode.txt" | median)
	LOAD[$mode]=$(awk '{print $3}' "$DIR/$mode.txt" | median)
	PROG[$mode]=$(awk '{print $4}' "$DIR/$mode.txt" | median)
}

log "namespaces $NS_GW/$NS_CL, $RUNS runs of ${SECS}s per mode"
sysctl -qw kernel.bpf_stats_enabled=1 || log "no kernel.bpf_stats_enabled: no program run time"
for mode in xdp tc; do
	start_gw "{interfaces: [$V_GW], attach: $mode, syn_rate: 1, syn_burst: 1}"
	if ! limits_json | grep -q '"active":true'; then
		log "$mode: the limiter did not attach: $(limits_json | grep -o '"why_off":"[^"]*"')"
		stop_gw
		continue
	fi
	run_mode "$mode"
	stop_gw
done

start_gw "{}"
ip netns exec "$NS_GW" nft -f - <<EOF || log "nftables: rule refused"
table ip rb {
	set m { type ipv4_addr; flags dynamic; timeout 10s; }
	chain pre {
		type filter hook prerouting priority -300; policy accept;
		tcp dport $PORT tcp flags & (syn | ack) == syn update @m { ip saddr limit rate over 1/second burst 1 packets } counter drop
	}
}
EOF
run_mode nftables
ip netns exec "$NS_GW" nft delete table ip rb
run_mode none
stop_gw

start_gw "{syn_rate: 1, syn_burst: 1}"
run_mode userspace
stop_gw

printf '\n%-10s %14s %14s %14s %14s\n' mode "dropped/s" "load/s" "CPU ns/drop" "prog ns/pkt"
for mode in xdp tc nftables userspace none; do
	[ -n "${PPS[$mode]:-}" ] || continue
	printf '%-10s %14s %14s %14s %14s\n' "$mode" "${PPS[$mode]}" "${LOAD[$mode]}" "${CPU[$mode]}" \
		"$([ "${PROG[$mode]}" != 0 ] && echo "${PROG[$mode]}" || echo -)"
done
echo "(medians of $RUNS runs of ${SECS}s; userspace: connections refused at accept;"
echo " none: SYNs answered by the kernel's TCP stack with a SYN-ACK, not dropped; CPU ns/drop:"
echo " every CPU's busy time, the generator and the rest of the machine included; prog ns/pkt:"
echo " the program's own run time under the flood, kernel.bpf_stats_enabled)"

cost_table
