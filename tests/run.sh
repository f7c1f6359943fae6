#!/usr/bin/env bash
# Runs every test tier and prints the closing line "N passed, N failed[, N skipped]".
#
# Each test binary speaks the protocol of tests/lib/test.h (PASS/FAIL/SKIP lines).
# A binary that exits non-zero without printing a FAIL line (a crash, a
# sanitizer report, a timeout) counts as one failure under its own name.
# Usage: tests/run.sh [tier ...]   tiers: unit bpf e2e fuzz (default: all)
set -uo pipefail
cd "$(dirname "$0")/.."
B=${BUILD:-build}
tiers=("$@")
[ ${#tiers[@]} -eq 0 ] && tiers=(unit bpf e2e fuzz)
logdir=$B/test-logs
mkdir -p "$logdir"
pass=0 fail=0 skip=0
failed_names=() skipped_lines=()

run_one() { # tier name timeout cmd...
	local tier=$1 name=$2 tmo=$3; shift 3
	local log=$logdir/$tier-$name.log
	local t0=$(date +%s.%N)
	timeout --kill-after=10 "$tmo" "$@" >"$log" 2>&1
	local rc=$?
	local p f s
	p=$(grep -c '^PASS ' "$log"); f=$(grep -c '^FAIL ' "$log"); s=$(grep -c '^SKIP ' "$log")
	if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
		f=1
		[ "$rc" -eq 124 ] && echo "FAIL $name: timed out after $tmo" >>"$log" ||
			echo "FAIL $name: exited with status $rc" >>"$log"
	fi
	pass=$((pass + p)); fail=$((fail + f)); skip=$((skip + s))
	local dt=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
	if [ "$f" -gt 0 ]; then
		printf '  %-5s %-40s %3d passed, %d FAILED (%ss)\n' "$tier" "$name" "$p" "$f" "$dt"
		grep -E '^(FAIL|  also) ' "$log" | sed 's/^/        /' | head -20
		echo "        (full log: $log)"
		failed_names+=("$tier/$name")
	else
		printf '  %-5s %-40s %3d passed%s (%ss)\n' "$tier" "$name" "$p" \
			"$([ "$s" -gt 0 ] && echo ", $s skipped")" "$dt"
	fi
	while IFS= read -r l; do skipped_lines+=("$l"); done < <(grep '^SKIP ' "$log")
}

for tier in "${tiers[@]}"; do
	case $tier in
	unit|bpf)
		[ -d "$B/tests/$tier" ] || continue
		while IFS= read -r bin; do
			run_one "$tier" "$(basename "$bin")" 300 "$bin"
		done < <(find "$B/tests/$tier" -type f -executable -name 'test_*' | sort)
		;;
	e2e)
		[ -d "$B/tests/e2e" ] || continue
		while IFS= read -r bin; do
			run_one e2e "$(basename "$bin")" 900 env REFLEX_BUILD="$B" "$bin"
		done < <(find "$B/tests/e2e" -type f -executable -name '[0-9]*' | sort)
		;;
	fuzz)
		[ -d "$B/fuzz" ] || continue
		while IFS= read -r bin; do
			n=$(basename "$bin")
			corpus=tests/fuzz/corpus/${n#fuzz_}
			work=$(mktemp -d)
			[ -d "$corpus" ] && cp -r "$corpus"/. "$work"/ 2>/dev/null
			# A fixed number of runs on a copy of the seed corpus: repeatable and bounded.
			# Crash artifacts go to the log directory, never into the tree.
			run_one fuzz "$n" 300 sh -c "'$bin' -runs=${FUZZ_RUNS:-200000} -seed=1 -artifact_prefix='$logdir/$n-' '$work' && echo 'PASS $n'"
			rm -rf "$work"
		done < <(find "$B/fuzz" -maxdepth 1 -type f -executable -name 'fuzz_*' | sort)
		;;
	*) echo "unknown tier: $tier" >&2; exit 2 ;;
	esac
done

if [ ${#skipped_lines[@]} -gt 0 ]; then
	echo "skipped:"
	printf '  %s\n' "${skipped_lines[@]}"
fi
if [ ${#failed_names[@]} -gt 0 ]; then
	echo "failed:"
	printf '  %s\n' "${failed_names[@]}"
fi
if [ "$skip" -gt 0 ]; then
	echo "$pass passed, $fail failed, $skip skipped"
else
	echo "$pass passed, $fail failed"
fi
[ "$fail" -eq 0 ]
