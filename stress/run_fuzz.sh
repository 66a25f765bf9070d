#!/usr/bin/env bash
# stress/run_fuzz.sh: builds the libFuzzer targets stress/fuzz_api (the
# context and pool API) and stress/fuzz_wire (the tracestate and baggage
# parsers: round trips) with clang,
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
# New inputs go to <build>/corpus (fuzz_api) and <build>/corpus-fuzz_wire,
# failing ones to <build>/artifacts; the seed corpora in stress/corpus and
# stress/corpus-wire are read, never written. Replay a failing input with
# `<build>/stress/fuzz_api FILE` (or fuzz_wire) or, in any build,
# `fuzz_api_driver FILE` (or fuzz_wire_driver).
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
cmake --build "$build" --target fuzz_api fuzz_wire -j"$(nproc)" >"$build.build.log" 2>&1 || {
    cat "$build.build.log" >&2
    exit 1
}

mkdir -p "$build/artifacts"
# fuzz_api (the context and pool API) gets two thirds of the time,
# fuzz_wire (the tracestate and baggage parsers) the rest.
wire_seconds=$((seconds / 3 > 0 ? seconds / 3 : 1))
api_seconds=$((seconds - wire_seconds > 0 ? seconds - wire_seconds : 1))
total_runs=0
failed=0

# fuzz TARGET SECONDS SEED_CORPUS MAX_LEN
fuzz() {
    local target=$1 secs=$2 seeds=$3 max_len=$4 status=0
    local corpus=$build/corpus-$target log=$build/$target.log
    [[ $target == fuzz_api ]] && corpus=$build/corpus   # where it always was
    mkdir -p "$corpus"
    printf '%s: %s s, %s job(s), corpus %s + seeds %s\n' \
        "$target" "$secs" "$jobs" "$corpus" "$seeds"
    (
        cd "$build"
        export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:${ASAN_OPTIONS-}"
        export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS-}"
        args=(-max_total_time="$secs" -max_len="$max_len" -timeout=30 -rss_limit_mb=4096
            -print_final_stats=1 -artifact_prefix="$build/artifacts/")
        if ((jobs > 1)); then
            args+=(-jobs="$jobs" -workers="$jobs")
        fi
        exec "$build/stress/$target" "${args[@]}" "$corpus" "$seeds"
    ) >"$log" 2>&1 || status=$?

    if ((jobs > 1)); then
        cat "$build"/fuzz-*.log >>"$log" 2>/dev/null || true
    fi
    # libFuzzer's summary: one line per process with -print_final_stats.
    local runs
    runs=$(awk '/^stat::number_of_executed_units:/ { n += $NF } END { print n + 0 }' "$log")
    grep -E '^(Done [0-9]+ runs|INFO: Seed|==[0-9]+==ERROR|SUMMARY|fuzz_api: MISMATCH|Test unit written|stat::(average_exec_per_sec|new_units_added|peak_rss_mb))' \
        "$log" || true
    printf '  %-32s %s\n' "executions" "$runs"
    printf '  %-32s %s\n' "corpus after the run" "$(find "$corpus" -type f | wc -l) inputs"
    total_runs=$((total_runs + runs))
    if ((status != 0)); then
        printf '%s: FAILED (exit status %d); the log is %s\n' "$target" "$status" "$log" >&2
        tail -n 40 "$log" >&2
        failed=$((failed + 1))
    fi
}

fuzz fuzz_api "$api_seconds" "$root/stress/corpus" 512
# Longer inputs: tracestate truncation starts past 512 characters.
fuzz fuzz_wire "$wire_seconds" "$root/stress/corpus-wire" 4096
printf '%s passed, %s failed\n' "$total_runs" "$failed"
((failed == 0))
