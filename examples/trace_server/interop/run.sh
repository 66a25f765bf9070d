#!/usr/bin/env bash
# examples/trace_server/interop/run.sh: the OpenTelemetry interop test
# (otel_interop.cjs) against a build's trace_server.
#
# Usage: examples/trace_server/interop/run.sh [BUILD_DIR] [ARGS...]
#   BUILD_DIR  a configured and built tree (default: build/dev)
#   ARGS       passed to otel_interop.cjs (--contexts N, --seed N, ...)
#
# Installs the pinned OpenTelemetry packages from the npm registry into
# BUILD_DIR/otel-interop (once; never into the source tree), then runs the
# test. Without node and npm (scripts/bootstrap installs them), or without a
# trace_server built with libcurl, it says so and exits 77 (skipped).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../../.." && pwd)
build=${1:-$root/build/dev}
shift || true
build=$(cd "$build" && pwd)

# The versions the test is known against. @opentelemetry/core 2.x supports
# Node 18.19+ (Debian bookworm ships 18.20); 3.x needs Node 22.
otel_api=1.9.0
otel_core=2.12.1
otel_semconv=1.38.0

server=$build/examples/trace_server/trace_server
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    printf 'otel_interop: SKIPPED: node and npm are needed (scripts/bootstrap installs them)\n' >&2
    exit 77
fi
if [[ ! -x $server ]] || ! grep -q curl_easy_perform "$server"; then
    printf 'otel_interop: SKIPPED: %s not built with libcurl (libmicrohttpd-dev, libcurl4-openssl-dev)\n' \
        "$server" >&2
    exit 77
fi

modules=$build/otel-interop
stamp=$modules/.installed-$otel_api-$otel_core-$otel_semconv
if [[ ! -e $stamp ]]; then
    rm -rf "$modules"
    mkdir -p "$modules"
    printf '{"name":"als-otel-interop","private":true}\n' >"$modules/package.json"
    npm install --prefix "$modules" --no-audit --no-fund --no-save --loglevel=error \
        "@opentelemetry/api@$otel_api" "@opentelemetry/core@$otel_core" \
        "@opentelemetry/semantic-conventions@$otel_semconv"
    touch "$stamp"
fi
exec node "$here/otel_interop.cjs" --server "$server" --modules "$modules" "$@"
