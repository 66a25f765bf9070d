#!/usr/bin/env bash
# stress/run_valgrind.sh: the short stress suite once under valgrind memcheck.
#
# Usage: stress/run_valgrind.sh
# Environment:
#   ALS_VALGRIND_BUILD_DIR  a build without sanitizers (default build/dev,
#                           configured with the dev preset if needed)
#   ALS_VALGRIND_SECONDS    time per program (default 2)
#
# Small sizes (--small: fewer threads, rounds and mutations), memcheck with
# --error-exitcode=1 and definite or indirect leaks counted as errors. A
# couple of minutes in all: valgrind runs threads one at a time, and the
# time-bound programs simply do less. Ends with "N passed, N failed"
# counting programs; exit status 0 only if all passed.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=lib.sh
source "$root/stress/lib.sh"
build=${ALS_VALGRIND_BUILD_DIR:-$root/build/dev}
mkdir -p "$(dirname "$build")"  # a fresh clone has no build/ yet
seconds=${ALS_VALGRIND_SECONDS:-2}

if ! command -v valgrind >/dev/null; then
    printf 'run_valgrind.sh: valgrind is needed (apt-get install valgrind)\n' >&2
    exit 2
fi

programs=(badinput crosstalk lifecycle ownership wakeups handoff pinned allocfail fuzz_api_driver fuzz_wire_driver cancel)
if [[ ! -f $build/CMakeCache.txt ]]; then
    cmake --preset dev -S "$root" -B "$build" >"$build.configure.log" 2>&1 || {
        cat "$build.configure.log" >&2
        exit 1
    }
fi
cmake --build "$build" -j"$(nproc)" --target "${programs[@]}" >"$build.valgrind-build.log" 2>&1 || {
    cat "$build.valgrind-build.log" >&2
    exit 1
}

logs="$build/valgrind-logs"
mkdir -p "$logs"
for p in "${programs[@]}"; do
    args=(--small --seconds "$seconds")
    if [[ $p == fuzz_api_driver ]]; then
        args+=("$root/stress/corpus")
    elif [[ $p == fuzz_wire_driver ]]; then
        args+=("$root/stress/corpus-wire")
    fi
    printf '\n== %s under valgrind\n' "$p"
    status=0
    # timeout: a backstop well above the program's own time; the hang
    # guard inside each program is sized for sanitizers, not for this.
    timeout 300 valgrind --tool=memcheck --error-exitcode=1 --leak-check=full \
        --errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect \
        --fair-sched=yes --quiet \
        "$build/stress/$p" "${args[@]}" >"$logs/$p.log" 2>&1 || status=$?
    show_figures "$logs/$p.log"
    record "$p" "$logs/$p.log" "$status"
done
finish "valgrind memcheck"
