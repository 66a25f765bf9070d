#!/usr/bin/env bash
# stress/run_long.sh: the long stress run, under ThreadSanitizer.
#
# Usage: stress/run_long.sh [MINUTES]     (default 12, at least 10)
#
# Builds the tsan preset into build/tsan-long (ALS_STRESS_LONG_DIR
# overrides) and runs each stress program in turn with its share of the
# time (--seconds), halting on the first ThreadSanitizer report. Each
# program's output goes to <build>/long-logs/<program>.log; the figures are
# printed as they come, then a summary: per program its closing line, the
# ThreadSanitizer reports, and a closing "N passed, N failed" line counting
# programs. Exit status 0 only if every program passed.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=lib.sh
source "$root/stress/lib.sh"
minutes=${1:-12}
build=${ALS_STRESS_LONG_DIR:-$root/build/tsan-long}
mkdir -p "$(dirname "$build")"  # a fresh clone has no build/ yet

if ! [[ $minutes =~ ^[0-9]+$ ]] || ((minutes < 10)); then
    printf 'usage: %s [MINUTES]   (at least 10)\n' "$0" >&2
    exit 2
fi

# Shares of the time, in percent (they add up to 100).
programs=(crosstalk lifecycle ownership wakeups handoff pinned allocfail fuzz_api_driver badinput unwind cancel)
shares=(14 13 14 8 6 8 9 8 5 5 10)
if ((${#programs[@]} != ${#shares[@]})); then
    echo "stress/run_long.sh: ${#programs[@]} programs but ${#shares[@]} shares" >&2
    exit 2
fi

cmake --preset tsan -S "$root" -B "$build" -DALS_BUILD_BENCH=OFF -DALS_BUILD_EXAMPLES=OFF \
    >"$build.configure.log" 2>&1 || {
    cat "$build.configure.log" >&2
    exit 1
}
cmake --build "$build" -j"$(nproc)" --target "${programs[@]}" >"$build.build.log" 2>&1 || {
    cat "$build.build.log" >&2
    exit 1
}

export TSAN_OPTIONS="halt_on_error=1:history_size=7:second_deadlock_stack=1"
logs="$build/long-logs"
mkdir -p "$logs"
total=$((minutes * 60))
printf 'stress/run_long.sh: %d minutes under ThreadSanitizer, build %s\n' "$minutes" "$build"

for i in "${!programs[@]}"; do
    p=${programs[$i]}
    secs=$((total * shares[i] / 100))
    args=(--seconds "$secs")
    if [[ $p == fuzz_api_driver ]]; then
        args+=("$root/stress/corpus")
    fi
    printf '\n== %s (%d s)\n' "$p" "$secs"
    status=0
    "$build/stress/$p" "${args[@]}" >"$logs/$p.log" 2>&1 || status=$?
    show_figures "$logs/$p.log"
    reports=$(grep -c 'WARNING: ThreadSanitizer' "$logs/$p.log" || true)
    if ((reports > 0 && status == 0)); then
        status=66
    fi
    record "$p" "$logs/$p.log" "$status" ", TSan reports: $reports"
done
finish "$minutes minutes under ThreadSanitizer"
