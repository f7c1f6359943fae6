#!/usr/bin/env bash
# perf/scenarios/system-services.sh — the system instances of the servers the benchmark
# starts its own copies of (nginx, HAProxy, Varnish).
#
# usage: perf/scenarios/system-services.sh status|stop
#   status  one line per server: whether its system service runs (and its PIDs)
#   stop    stop and disable the running/enabled system services (make bench runs this
#           after make deps: installing these packages on Debian starts their default
#           instances, which would then share the CPUs the benchmark measures on)
#
# The benchmark's own instances listen on 1838x ports and run from a private directory;
# this touches only the packages' system services, through systemctl or, without systemd,
# their init scripts. BENCH_KEEP_SERVICES=1 leaves them alone (make bench then reports
# that they run, with their CPU use, in the machine description).
set -u

SERVICES="nginx haproxy varnish varnishncsa"

have_systemd() { [ -d /run/systemd/system ]; }

# pids_of SERVICE: PIDs of the service's main process, from systemd or its pidfile.
pids_of() {
	local s=$1 pid=
	if have_systemd; then
		pid=$(systemctl show -p MainPID --value "$s" 2>/dev/null)
		[ "$pid" = 0 ] && pid=
	else
		for f in /run/$s.pid /run/$s/$s.pid /var/run/$s.pid; do
			[ -r "$f" ] && pid=$(cat "$f") && break
		done
	fi
	[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
	return 0
}

installed() {
	case $1 in
	varnishncsa) dpkg-query -W -f='${Status}' varnish 2>/dev/null | grep -q 'ok installed' ;;
	*) dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed' ;;
	esac
}

case ${1:-status} in
status)
	for s in $SERVICES; do
		installed "$s" || continue
		pid=$(pids_of "$s")
		if [ -n "$pid" ]; then
			echo "$s: system service running (pid $pid)"
		else
			echo "$s: system service not running"
		fi
	done
	;;
stop)
	if [ "${BENCH_KEEP_SERVICES:-0}" = 1 ]; then
		echo "system-services: BENCH_KEEP_SERVICES=1, not touching system services"
		exit 0
	fi
	[ "$(id -u)" -eq 0 ] && SUDO= || SUDO=sudo
	for s in $SERVICES; do
		installed "$s" || continue
		if have_systemd; then
			if systemctl is-active -q "$s" 2>/dev/null || systemctl is-enabled -q "$s" 2>/dev/null; then
				echo "system-services: stopping and disabling the system $s service (the benchmark runs its own)"
				$SUDO systemctl disable --now "$s" >/dev/null 2>&1 ||
					echo "system-services: could not stop $s (it will share the CPUs)" >&2
			fi
		elif [ -n "$(pids_of "$s")" ] && [ -x "/etc/init.d/$s" ]; then
			echo "system-services: stopping and disabling the system $s service (the benchmark runs its own)"
			$SUDO "/etc/init.d/$s" stop >/dev/null 2>&1 ||
				echo "system-services: could not stop $s (it will share the CPUs)" >&2
			command -v update-rc.d >/dev/null && $SUDO update-rc.d "$s" disable >/dev/null 2>&1
		fi
	done
	exit 0
	;;
*)
	echo "usage: $0 status|stop" >&2
	exit 2
	;;
esac
