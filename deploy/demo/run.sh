#!/usr/bin/env bash
# `make run`: two reflex-origin replicas and reflexd in front of them on
# 127.0.0.1:8080, in the foreground. Ctrl-C (or SIGTERM) stops everything
# this script started.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=${1:-build}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
CONFIG=$ROOT/deploy/demo/reflexd.yaml

for port in 8080 9001 9002; do
	if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then
		echo "make run: port $port on 127.0.0.1 is in use; stop what holds it first" >&2
		exit 1
	fi
done

pids=()
stop() {
	trap - INT TERM EXIT
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	echo "make run: stopped"
}
trap stop INT TERM EXIT

"$BUILD/reflex-origin" --listen 127.0.0.1:9001 --name origin-a &
pids+=($!)
"$BUILD/reflex-origin" --listen 127.0.0.1:9002 --name origin-b &
pids+=($!)
"$BUILD/reflexd" --config "$CONFIG" &
pids+=($!)

for _ in $(seq 50); do
	(exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null && break
	sleep 0.1
done
cat <<MSG

Reflex is running on http://127.0.0.1:8080 in front of two orchestrator
replicas (reflex-origin on 127.0.0.1:9001 and 127.0.0.1:9002). Try:

  curl -i 'http://127.0.0.1:8080/hello?size=64'

(the X-Origin header names the replica that answered; see docs/origin.md for
what else reflex-origin can be asked to do: delay, status, chunked, sse=N ...)
Ctrl-C stops everything.

MSG
wait -n "${pids[@]}"
