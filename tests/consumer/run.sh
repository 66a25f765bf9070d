#!/usr/bin/env bash
# The check functions below are only called through check(), and the
# linter cannot see that (it would call them unreachable):
# shellcheck disable=SC2317
#
# Consumer test: build libals with the release preset (cmocka hidden from
# pkg-config: the library must not need it, and the preset must build no
# tests, stress programs or benchmarks), install it into a temporary prefix,
# then build and run tests/consumer/main.c, as C and as C++, against that
# install the four ways other projects do:
#   find_package(als) + als::als          find_package(als) + als::als_static
#   pkg-config (shared)                   pkg-config --static (fully static)
# with Concurrency Kit's ck.pc hidden from pkg-config (libals needs no ck
# symbol, so its users must need nothing of ck). Also checks what the
# installed libals.so exports, that no preset exports a test define, and
# that the README's examples compile as C and C++ and run.
#
# Usage: tests/consumer/run.sh          (from anywhere)
# Environment:
#   CC                compiler for libals and the consumer (default: cc)
#   CXX               C++ compiler for the consumer (default: c++)
#   JOBS              parallel build jobs (default: 2)
#   KEEP=1            keep the work directory (it is always kept on failure)
#   ALS_CONSUMER_ALLOW_MISSING=1
#                     report header functions missing from libals.so as a
#                     warning instead of a failure (while modules are
#                     half-written)
# Prints PASS/FAIL/SKIP per check and a last line "N passed, N failed";
# exits non-zero if anything failed.

set -u

SRC=$(cd "$(dirname "$0")/../.." && pwd)
JOBS=${JOBS:-2}
CC=${CC:-cc}
CXX=${CXX:-c++}
export CC CXX
WORK=$(mktemp -d "${TMPDIR:-/tmp}/als-consumer.XXXXXX")
PREFIX=$WORK/prefix
LOGS=$WORK/logs
mkdir -p "$LOGS"

# shellcheck source=report.sh
. "$SRC/tests/consumer/report.sh"

# check NAME CMD...: runs CMD with its output in a log; shows the log's tail
# on failure. Returns CMD's status so that later steps can depend on it.
check() {
    local name=$1 log
    shift
    log=$LOGS/$(printf '%s' "$name" | tr -c 'A-Za-z0-9_.-' '_').log
    if "$@" >"$log" 2>&1; then
        passed=$((passed + 1))
        echo "PASS: $name"
        return 0
    fi
    failed=$((failed + 1))
    echo "FAIL: $name (log: $log)"
    tail -n 40 "$log" | sed 's/^/    /'
    return 1
}

skip() {
    echo "SKIP: $1 (an earlier step failed)"
}

# --- libals: build and install ---------------------------------------------

# pkg-config directories: one that shows ck alone (building libals needs
# ck's headers, but not cmocka), and an empty one for the consumers.
CK_ONLY=$WORK/pc-ck-only
NO_PC=$WORK/pc-empty
mkdir -p "$CK_ONLY" "$NO_PC"
if ck_pc=$(pkg-config --variable=pcfiledir ck 2>/dev/null); then
    ln -s "$ck_pc/ck.pc" "$CK_ONLY/ck.pc"
fi

# The release preset as a user runs it (examples off: they need more
# packages than the library).
build_libals() {
    PKG_CONFIG_PATH='' PKG_CONFIG_LIBDIR="$CK_ONLY" \
        cmake -S "$SRC" -B "$WORK/build" --preset release -DALS_BUILD_EXAMPLES=OFF \
        -DCMAKE_INSTALL_PREFIX="$PREFIX" &&
        cmake --build "$WORK/build" -j"$JOBS"
}

install_libals() {
    # --prefix on purpose equal to the configured one: the .pc file takes
    # its prefix at install time either way.
    cmake --install "$WORK/build" --prefix "$PREFIX"
}

if ! check "libals: configure and build (release preset, no cmocka)" build_libals ||
    ! check "libals: install into a temporary prefix" install_libals; then
    finish
fi

release_builds_no_tests() {
    local d status=0
    grep -E '^ALS_BUILD_(TESTS|BENCH)' "$WORK/build/CMakeCache.txt"
    for d in tests stress bench; do
        if [ -e "$WORK/build/$d" ]; then
            echo "the release preset configured $d/"
            status=1
        fi
    done
    return "$status"
}
check "release preset: no tests, stress programs or benchmarks" release_builds_no_tests

# Asked for tests without cmocka: the library still configures, the unit
# tests are skipped, and the message says why.
tests_without_cmocka() {
    local log=$WORK/nocmocka.log rc=0
    PKG_CONFIG_PATH='' PKG_CONFIG_LIBDIR="$CK_ONLY" \
        cmake -S "$SRC" -B "$WORK/build-nocmocka" -DALS_BUILD_TESTS=ON \
        -DALS_BUILD_BENCH=OFF -DALS_BUILD_EXAMPLES=OFF >"$log" 2>&1 || rc=$?
    cat "$log"
    [ "$rc" -eq 0 ] && grep -q 'cmocka not found' "$log" &&
        [ ! -e "$WORK/build-nocmocka/tests" ]
}
check "without cmocka: configures, unit tests skipped with a message" tests_without_cmocka

# The exported targets (installed and build-tree) of every preset carry
# nothing but the include directory, pthreads and, for als::als_static,
# ALS_STATIC_DEFINE: no test define (ALS_FAULT_INJECTION), no ck.
exports_clean() {
    local preset dir f status=0
    for preset in dev asan tsan release; do
        dir=$WORK/cfg-$preset
        [ "$preset" = release ] && dir=$WORK/build
        if [ "$preset" != release ] &&
            ! cmake -S "$SRC" -B "$dir" --preset "$preset" -DALS_BUILD_TESTS=OFF \
                -DALS_BUILD_BENCH=OFF -DALS_BUILD_EXAMPLES=OFF >"$dir.log" 2>&1; then
            cat "$dir.log"
            return 1
        fi
        for f in "$dir/alsTargets.cmake" "$dir"/CMakeFiles/Export/*/alsTargets.cmake; do
            echo "== $preset: ${f#"$WORK"/}"
            grep -E 'INTERFACE_[A-Z_]+' "$f"
            if grep -E 'INTERFACE_COMPILE_(DEFINITIONS|OPTIONS)' "$f" |
                grep -vE '"ALS_STATIC_DEFINE"'; then
                echo "^ a compile definition or option other than ALS_STATIC_DEFINE"
                status=1
            fi
            if grep -E 'INTERFACE_LINK_(LIBRARIES|OPTIONS)' "$f" |
                grep -vE '"Threads::Threads"'; then
                echo "^ a link dependency other than Threads::Threads"
                status=1
            fi
        done
    done
    return "$status"
}
check "exported targets of dev, asan, tsan, release: no test define, no ck" exports_clean

# Where GNUInstallDirs put the libraries (lib, lib64, ...).
LIBDIR_REL=$(sed -n 's/^CMAKE_INSTALL_LIBDIR:[A-Z]*=//p' "$WORK/build/CMakeCache.txt")
LIBDIR=$PREFIX/${LIBDIR_REL:-lib}
MAJOR=$(sed -n 's/^#define ALS_VERSION_MAJOR \([0-9]*\).*/\1/p' "$PREFIX/include/als.h")

installed_files() {
    local f status=0
    for f in include/als.h \
        "$LIBDIR_REL/libals.so" "$LIBDIR_REL/libals.so.$MAJOR" "$LIBDIR_REL/libals.a" \
        "$LIBDIR_REL/cmake/als/alsConfig.cmake" \
        "$LIBDIR_REL/cmake/als/alsConfigVersion.cmake" \
        "$LIBDIR_REL/cmake/als/alsTargets.cmake" \
        "$LIBDIR_REL/pkgconfig/als.pc"; do
        if [ -e "$PREFIX/$f" ]; then
            echo "ok      $f"
        else
            echo "MISSING $f"
            status=1
        fi
    done
    # Every public header in the source tree is installed.
    for f in "$SRC"/include/*.h; do
        if [ ! -e "$PREFIX/include/$(basename "$f")" ]; then
            echo "MISSING include/$(basename "$f")"
            status=1
        fi
    done
    return "$status"
}
check "install: headers, libraries, CMake package, als.pc" installed_files

soname() {
    readelf -d "$LIBDIR/libals.so" | tee /dev/stderr |
        grep -q "(SONAME).*\[libals\.so\.$MAJOR\]"
}
check "libals.so: SONAME is libals.so.$MAJOR" soname

# ck is header-only for libals (ck_ring is all inline functions): neither
# library may refer to a ck symbol or to libck, or users would need it.
no_ck_symbols() {
    local bad
    bad=$( (nm "$LIBDIR/libals.a"; nm -D "$LIBDIR/libals.so") | grep -E ' U _?ck_')
    readelf -d "$LIBDIR/libals.so" | grep NEEDED
    if [ -n "$bad" ]; then
        echo "undefined ck symbols:"
        echo "$bad"
        return 1
    fi
    ! readelf -d "$LIBDIR/libals.so" | grep -q 'NEEDED.*libck'
}
check "nm: libals.a and libals.so need no ck symbol" no_ck_symbols

# The CMake package must not look for ck (nor for pkg-config).
package_no_ck() {
    ! cat "$LIBDIR"/cmake/als/*.cmake | grep -vE '^[[:space:]]*#' |
        grep -nE 'PkgConfig|pkg_check|\<ck\>'
}
check "CMake package: no ck, no pkg-config" package_no_ck

# --- exported symbols ------------------------------------------------------

# Names of the functions and variables the installed headers mark ALS_API
# (comments and preprocessor lines removed first; declarations may span
# lines).
api_names() {
    perl -0777 -ne '
        s{/\*.*?\*/}{}gs; s{//[^\n]*}{}g; s{^[ \t]*#(?:[^\n]*\\\n)*[^\n]*}{}gm;
        while (/\bALS_API\b([^;(]*)[;(]/g) {
            my $d = $1; print "$1\n" if $d =~ /([A-Za-z_]\w*)\s*$/;
        }' "$PREFIX"/include/*.h | sort -u
}

nm -D --defined-only "$LIBDIR/libals.so" | awk '{print $NF}' | sed 's/@.*//' |
    sort -u >"$WORK/exported.txt"
api_names >"$WORK/api.txt"
# Linker-defined symbols older toolchains put in the dynamic symbol table.
STANDARD='^(_init|_fini|_edata|_end|__bss_start)$'

exports_only_api() {
    local extra
    echo "libals.so exports $(wc -l <"$WORK/exported.txt") symbols:"
    cat "$WORK/exported.txt"
    # Anything not declared ALS_API in an installed header leaked: internal
    # helpers (als__*) included, even though they start with "als_".
    extra=$(grep -Ev "$STANDARD" "$WORK/exported.txt" | grep -vxF -f "$WORK/api.txt")
    if [ -n "$extra" ]; then
        echo "exported but not public API:"
        echo "$extra"
        return 1
    fi
    if grep -Ev "$STANDARD" "$WORK/exported.txt" | grep -qv '^als_'; then
        echo "exported names outside the als_ prefix"
        return 1
    fi
}
als_count=$(grep -c '^als_' "$WORK/exported.txt")
check "nm -D: libals.so exports only the public API ($als_count als_* symbols)" \
    exports_only_api
echo "exported symbols: $als_count als_* of $(wc -l <"$WORK/exported.txt") defined in total"

api_all_exported() {
    local missing
    missing=$(grep -vxF -f "$WORK/exported.txt" "$WORK/api.txt")
    echo "$(wc -l <"$WORK/api.txt") ALS_API declarations in the installed headers"
    if [ -n "$missing" ]; then
        echo "declared ALS_API but not exported by libals.so (consumers calling"
        echo "them fail to link):"
        echo "$missing"
        return 1
    fi
}
if [ "${ALS_CONSUMER_ALLOW_MISSING:-0}" = 1 ]; then
    if ! api_all_exported >"$LOGS/api_all_exported.log" 2>&1; then
        echo "WARN: header functions missing from libals.so (allowed by" \
            "ALS_CONSUMER_ALLOW_MISSING=1):"
        sed 's/^/    /' "$LOGS/api_all_exported.log"
    fi
else
    check "nm -D: every ALS_API declaration is exported" api_all_exported
fi

# --- the consumer, four ways ----------------------------------------------

# A copy outside the source tree: the consumer must not reach back into it.
cp -R "$SRC/tests/consumer" "$WORK/consumer-src"
rm -f "$WORK/consumer-src/run.sh"

# binary_uses_installed BIN: the shared libals it loads is the one installed
# into $PREFIX (not one from the build tree or the system).
uses_installed_so() {
    ldd "$1"
    ldd "$1" | grep -q "libals\.so\.$MAJOR => $LIBDIR/libals\.so\.$MAJOR "
}

# links_no_libals BIN: a statically linked libals leaves no trace in ldd.
links_no_libals() {
    ldd "$1"    # "not a dynamic executable" (status 1) for -static builds
    ! ldd "$1" 2>&1 | grep -q 'libals'
}

# pkg-config sees nothing (no ck.pc): find_package(als) must not need it.
cmake_consumer() {
    local dir=$1 static=$2
    PKG_CONFIG_PATH='' PKG_CONFIG_LIBDIR="$NO_PC" \
        cmake -S "$WORK/consumer-src" -B "$dir" -DCMAKE_BUILD_TYPE=Release \
        -DCMAKE_PREFIX_PATH="$PREFIX" -DALS_CONSUMER_STATIC="$static" &&
        cmake --build "$dir" -j"$JOBS" &&
        grep -qx "als_DIR:PATH=$LIBDIR/cmake/als" "$dir/CMakeCache.txt"
}

# run_both DIR: the consumer built as C, then as C++.
run_both() {
    "$1/consumer" && "$1/consumer_cxx"
}

if check "find_package, als::als: configure and build" \
    cmake_consumer "$WORK/c-cmake-shared" OFF; then
    check "find_package, als::als: run (C and C++)" run_both "$WORK/c-cmake-shared"
    check "find_package, als::als: loads the installed libals.so" \
        uses_installed_so "$WORK/c-cmake-shared/consumer"
else
    skip "find_package, als::als: run and ldd"
fi

if check "find_package, als::als_static: configure and build" \
    cmake_consumer "$WORK/c-cmake-static" ON; then
    check "find_package, als::als_static: run (C and C++)" run_both "$WORK/c-cmake-static"
    check "find_package, als::als_static: ldd shows no libals.so" \
        links_no_libals "$WORK/c-cmake-static/consumer"
else
    skip "find_package, als::als_static: run and ldd"
fi

# Only the install's als.pc is visible: no ck.pc, no system directory.
unset PKG_CONFIG_PATH
export PKG_CONFIG_LIBDIR="$LIBDIR/pkgconfig"
CFLAGS_STRICT=(-std=c11 -Wall -Wextra -Werror -pedantic-errors -O2)
CXXFLAGS_STRICT=(-std=c++20 -Wall -Wextra -Werror -pedantic-errors -O2)

pc_version() {
    local v
    v=$(pkg-config --modversion als) || return 1
    echo "als.pc: $v from $(pkg-config --variable=pcfiledir als)"
    [ "$(pkg-config --variable=libdir als)" = "$LIBDIR" ]
}
check "pkg-config: als.pc found, libdir is the install prefix's" pc_version

# With ck.pc invisible, every query works and none mentions ck: no
# Requires, no -lck, no ck Cflags (ck's own inject -D__x86_64__).
# libals.a records no dependencies, so --static must list -pthread, and it
# gives ALS_STATIC_DEFINE as als::als_static does.
pc_no_ck() {
    local cflags libs scflags slibs reqs
    if pkg-config --exists ck; then
        echo "ck.pc is visible: the check would prove nothing"
        return 1
    fi
    cflags=$(pkg-config --cflags als) && libs=$(pkg-config --libs als) &&
        scflags=$(pkg-config --static --cflags als) &&
        slibs=$(pkg-config --static --libs als) || return 1
    reqs=$(pkg-config --print-requires als; pkg-config --print-requires-private als)
    printf '%s\n' "--cflags: $cflags" "--libs: $libs" \
        "--static --cflags: $scflags" "--static --libs: $slibs" "requires: $reqs"
    case " $cflags $libs $scflags $slibs " in
    *ck* | *__x86_64__*) echo "mentions ck"; return 1 ;;
    esac
    [ -z "$reqs" ] || { echo "has Requires"; return 1; }
    case " $slibs " in *" -pthread "*) ;; *) echo "no -pthread"; return 1 ;; esac
    case " $scflags " in *" -DALS_STATIC_DEFINE "*) ;;
    *) echo "--static gives no -DALS_STATIC_DEFINE"; return 1 ;; esac
    case " $cflags " in *ALS_STATIC_DEFINE*) echo "shared users get ALS_STATIC_DEFINE"; return 1 ;; esac
}
check "pkg-config without ck.pc: no ck anywhere; --static adds -pthread, ALS_STATIC_DEFINE" pc_no_ck

# The lines a Makefile-free project would use (subshells: set -x stays local).
pc_shared() (
    set -x
    # shellcheck disable=SC2046 # word splitting of pkg-config output intended
    "$CC" "${CFLAGS_STRICT[@]}" -DEXPECTED_VERSION="\"$(pkg-config --modversion als)\"" \
        "$WORK/consumer-src/main.c" -o "$WORK/c-pc-shared" \
        $(pkg-config --cflags --libs als) \
        -Wl,-rpath,"$(pkg-config --variable=libdir als)"
)
pc_shared_cxx() (
    set -x
    # shellcheck disable=SC2046
    "$CXX" -x c++ "${CXXFLAGS_STRICT[@]}" \
        -DEXPECTED_VERSION="\"$(pkg-config --modversion als)\"" \
        "$WORK/consumer-src/main.c" -o "$WORK/c-pc-shared-cxx" \
        $(pkg-config --cflags --libs als) \
        -Wl,-rpath,"$(pkg-config --variable=libdir als)"
)
pc_static() (
    set -x
    # -static: everything, libc included, from archives. Only links if
    # Libs.private (-pthread) is complete, and without any -lck.
    # shellcheck disable=SC2046
    "$CC" -static "${CFLAGS_STRICT[@]}" -DEXPECT_STATIC_DEFINE \
        -DEXPECTED_VERSION="\"$(pkg-config --modversion als)\"" \
        "$WORK/consumer-src/main.c" -o "$WORK/c-pc-static" \
        $(pkg-config --static --cflags --libs als)
)

if check "pkg-config (shared): build" pc_shared; then
    check "pkg-config (shared): run" "$WORK/c-pc-shared"
    check "pkg-config (shared): loads the installed libals.so" \
        uses_installed_so "$WORK/c-pc-shared"
else
    skip "pkg-config (shared): run and ldd"
fi

if check "pkg-config (shared), as C++: build" pc_shared_cxx; then
    check "pkg-config (shared), as C++: run" "$WORK/c-pc-shared-cxx"
else
    skip "pkg-config (shared), as C++: run"
fi

if check "pkg-config --static: build" pc_static; then
    check "pkg-config --static: run" "$WORK/c-pc-static"
    check "pkg-config --static: ldd shows no libals.so" \
        links_no_libals "$WORK/c-pc-static"
else
    skip "pkg-config --static: run and ldd"
fi

# --- the README's examples --------------------------------------------------

# Every ```c block of README.md is a whole program: it must compile as C11
# and as C++20 against the install (pkg-config as the README says), and run.
readme_examples() {
    local f n=0 status=0
    mkdir -p "$WORK/readme"
    awk -v dir="$WORK/readme" '
        /^```c$/ { n++; f = sprintf("%s/example%d.c", dir, n); inblock = 1; next }
        /^```/ { inblock = 0; next }
        inblock { print > f }' "$SRC/README.md"
    for f in "$WORK"/readme/example*.c; do
        [ -e "$f" ] || { echo "no C examples in README.md"; return 1; }
        n=$((n + 1))
        echo "== ${f##*/}"
        # shellcheck disable=SC2046
        if ! "$CC" "${CFLAGS_STRICT[@]}" "$f" -o "${f%.c}" $(pkg-config --cflags --libs als) \
                -Wl,-rpath,"$LIBDIR" ||
            ! "$CXX" -x c++ "${CXXFLAGS_STRICT[@]}" "$f" -o "${f%.c}-cxx" \
                $(pkg-config --cflags --libs als) -Wl,-rpath,"$LIBDIR" ||
            ! "${f%.c}" || ! "${f%.c}-cxx"; then
            echo "^ ${f##*/} failed"
            status=1
        fi
    done
    echo "$n examples"
    return "$status"
}
check "README examples: compile as C and C++, run" readme_examples

finish
