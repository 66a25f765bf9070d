#!/usr/bin/env bash
# stress/run_fuzz.sh: builds the libFuzzer target stress/fuzz_api with clang,
# AddressSanitizer and UndefinedBehaviorSanitizer (the library too, with
# coverage: -fsanitize=fuzzer-no-link), in its own build directory, and
# fuzzes for SECONDS (default 60). Prints the executions and a closing
# "N passed, N failed" line: N passed = inputs executed, N failed = inputs
# that failed (a mismatch against the reference model, a sanitizer report,
# a crash, a leak or a timeout; libFuzzer stops at the first and saves it).
#
# Usage: stress/run_fuzz.sh [SECONDS]
# Environment:
#   ALS_FUZZ_BUILD_DIR  build directory (default: build/fuzz)
#   ALS_FUZZ_JOBS       parallel fuzzing processes (default 1)
#
# New inputs go to <build>/corpus, failing ones to <build>/artifacts; the
# seed corpus in stress/corpus is read, never written. Replay a failing input
# with `<build>/stress/fuzz_api FILE` or, in any build, `fuzz_api_driver FILE`.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
seconds=${1:-60}
build=${ALS_FUZZ_BUILD_DIR:-$root/build/fuzz}
mkdir -p "$(dirname "$build")"  # a fresh clone has no build/ yet
jobs=${ALS_FUZZ_JOBS:-1}

if ! [[ $seconds =~ ^[0-9]+$ ]] || ((seconds < 1)); then
    printf 'usage: %s [SECONDS]\n' "$0" >&2
    exit 2
fi
if ! command -v clang >/dev/null; then
    printf 'run_fuzz.sh: clang is needed (scripts/bootstrap installs it)\n' >&2
    exit 2
fi

sanitizers="address,undefined"
cmake -S "$root" -B "$build" \
    -DCMAKE_C_COMPILER=clang \
    -DCMAKE_BUILD_TYPE=Debug \
    -DALS_DEVELOPER=ON \
    -DALS_FAULT_INJECTION=ON \
    -DALS_FUZZ=ON \
    -DALS_BUILD_BENCH=OFF \
    -DALS_BUILD_EXAMPLES=OFF \
    "-DCMAKE_C_FLAGS=-O1 -g -fsanitize=fuzzer-no-link,$sanitizers -fno-sanitize-recover=all -fno-omit-frame-pointer" \
    "-DCMAKE_EXE_LINKER_FLAGS=-fsanitize=$sanitizers" \
    >"$build.configure.log" 2>&1 || {
    cat "$build.configure.log" >&2
    exit 1
}
cmake --build "$build" --target fuzz_api -j"$(nproc)" >"$build.build.log" 2>&1 || {
    cat "$build.build.log" >&2
    exit 1
}

mkdir -p "$build/corpus" "$build/artifacts"
log="$build/fuzz.log"
printf 'fuzz_api: %s s, %s job(s), corpus %s + seeds %s\n' \
    "$seconds" "$jobs" "$build/corpus" "$root/stress/corpus"
status=0
(
    cd "$build"
    export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:${ASAN_OPTIONS-}"
    export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS-}"
    args=(-max_total_time="$seconds" -max_len=512 -timeout=30 -rss_limit_mb=4096
        -print_final_stats=1 -artifact_prefix="$build/artifacts/")
    if ((jobs > 1)); then
        args+=(-jobs="$jobs" -workers="$jobs")
    fi
    exec "$build/stress/fuzz_api" "${args[@]}" "$build/corpus" "$root/stress/corpus"
) >"$log" 2>&1 || status=$?

if ((jobs > 1)); then
    cat "$build"/fuzz-*.log >>"$log" 2>/dev/null || true
fi
# libFuzzer's summary: one line per process with -print_final_stats.
runs=$(awk '/^stat::number_of_executed_units:/ { n += $NF } END { print n + 0 }' "$log")
grep -E '^(Done [0-9]+ runs|INFO: Seed|==[0-9]+==ERROR|SUMMARY|fuzz_api: MISMATCH|Test unit written|stat::(average_exec_per_sec|new_units_added|peak_rss_mb))' \
    "$log" || true
printf '  %-32s %s\n' "executions" "$runs"
printf '  %-32s %s\n' "corpus after the run" "$(find "$build/corpus" -type f | wc -l) inputs"
if ((status != 0)); then
    printf 'fuzz_api: FAILED (exit status %d); the log is %s\n' "$status" "$log" >&2
    tail -n 40 "$log" >&2
    printf '%s passed, 1 failed\n' "$runs"
    exit 1
fi
printf '%s passed, 0 failed\n' "$runs"
