#!/usr/bin/env bash
# ThreadSanitizer in a user's program (CTest consumer_tsan, label consumer).
#
# Builds the release libals (what users install: no TSan in it) and, as a
# control, the same library with ALS_NO_TSAN_ANNOTATIONS. Then builds
# tests/consumer_tsan/user.c with -fsanitize=thread against each, linked
# shared and static, with cc and (if installed) clang (the control with cc
# only), and runs every scenario with TSan's default options, as users do:
#   release libals:              no report, exit status 0
#   annotations compiled out:    at least one report in every scenario
# The control shows that the library's happens-before edges (lib/tsan.h)
# are what keeps the user's TSan quiet, and that each scenario exercises
# some of them.
#
# Usage: tests/consumer_tsan/run.sh
# Environment: CC (default cc), JOBS (default 2), KEEP=1 keeps the work
# directory (always kept on failure).
set -u

SRC=$(cd "$(dirname "$0")/../.." && pwd)
HERE=$SRC/tests/consumer_tsan
JOBS=${JOBS:-2}
CC=${CC:-cc}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/als-consumer-tsan.XXXXXX")
SCENARIOS=(logger fanout delayed snapshot destroy cancel)
# What a user gets by default; the preset's options must not help.
unset TSAN_OPTIONS

# shellcheck source=../consumer/report.sh
. "$SRC/tests/consumer/report.sh"

result() { # result OK NAME [DETAIL]
    if [ "$1" = 0 ]; then
        passed=$((passed + 1))
        echo "PASS: $2"
    else
        failed=$((failed + 1))
        echo "FAIL: $2${3:+ ($3)}"
    fi
}

# build_libals DIR [CMAKE ARGS...]: the release preset, library only.
build_libals() {
    local dir=$1
    shift
    {
        cmake -S "$SRC" -B "$dir" --preset release -DALS_BUILD_TESTS=OFF \
            -DALS_BUILD_BENCH=OFF -DALS_BUILD_EXAMPLES=OFF "$@" &&
            cmake --build "$dir" -j"$JOBS" --target als als_static
    } >"$dir.log" 2>&1
    local rc=$?
    [ "$rc" = 0 ] || tail -n 30 "$dir.log"
    result "$rc" "libals release build ${*:-(as installed)}"
    return "$rc"
}

build_libals "$WORK/lib" || finish
build_libals "$WORK/lib-noann" -DALS_NO_TSAN_ANNOTATIONS=ON || finish

# The release library refers to TSan's entry points weakly (they resolve
# only in a program that carries the TSan runtime); the control does not.
weak=$(nm -D "$WORK/lib/lib/libals.so" | grep -c ' w __tsan_\(acquire\|release\)$')
[ "$weak" = 2 ]
result $? "libals.so: __tsan_acquire/__tsan_release weak undefined" "found $weak"
none=$(nm -D "$WORK/lib-noann/lib/libals.so" | grep -c __tsan_)
[ "$none" = 0 ]
result $? "control libals.so: no TSan entry point" "found $none"

compilers=("$CC")
if command -v clang >/dev/null && [ "$(basename "$CC")" != clang ]; then
    compilers+=(clang)
fi

# run_all BIN WANT: WANT clean (exit 0, no report) or races (>= 1 report).
run_all() {
    local bin=$1 want=$2 s log n rc
    for s in "${SCENARIOS[@]}"; do
        log=$bin.$s.log
        "$bin" "$s" >"$log" 2>&1
        rc=$?
        n=$(grep -c 'WARNING: ThreadSanitizer' "$log")
        if [ "$want" = clean ]; then
            [ "$rc" = 0 ] && [ "$n" = 0 ]
            result $? "$(basename "$bin") $s: no report" "exit $rc, $n report(s), $log"
        else
            [ "$n" -gt 0 ]
            result $? "$(basename "$bin") $s: races reported" "exit $rc, $n report(s)"
        fi
    done
}

for cc in "${compilers[@]}"; do
    name=$(basename "$cc")
    # The mailbox stands for an uninstrumented library: no -fsanitize.
    if ! "$cc" -std=c11 -O2 -c "$HERE/mailbox.c" -o "$WORK/mailbox-$name.o"; then
        result 1 "$name: mailbox.c"
        continue
    fi
    libs_to_test=(lib)
    # The control once, with the first compiler (it proves the test, not
    # the compiler).
    [ "$cc" = "${compilers[0]}" ] && libs_to_test+=(lib-noann)
    for lib in "${libs_to_test[@]}"; do
        want=clean
        [ "$lib" = lib-noann ] && want=races
        L=$WORK/$lib/lib
        for link in shared static; do
            bin=$WORK/$name-$lib-$link
            if [ "$link" = shared ]; then
                libs=(-L"$L" -lals "-Wl,-rpath,$L")
            else
                libs=("$L/libals.a")
            fi
            if "$cc" -std=c11 -Wall -Wextra -Werror -O1 -g -fsanitize=thread \
                -I"$SRC/include" "$HERE/user.c" "$WORK/mailbox-$name.o" \
                -o "$bin" "${libs[@]}" -pthread >"$bin.build.log" 2>&1; then
                run_all "$bin" "$want"
            else
                cat "$bin.build.log"
                result 1 "$(basename "$bin"): build"
            fi
        done
    done
done

finish
