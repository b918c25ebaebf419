#!/usr/bin/env bash
# Measures whether apcore's costs follow the work asked rather than the
# records kept (issue #17): fills each store (memory, SQLite, PostgreSQL,
# Redis) with 10k and then 1M records and reports, side by side, the
# figures at both sizes and their ratio, on throwaway servers started as
# the tests start them (scripts/services.sh). The arguments go to the
# benchmark (benchmarks/scale; see its doc comment for the flags). A full
# run takes several minutes and a few GB of memory; it is not part of the
# tests. On a shared machine, run it under the heavy-work lock:
#
#   flock -o /tmp/apcore-heavy.lock ./scripts/bench-scale.sh
#   ./scripts/bench-scale.sh -quick                     # 1k and 10k, seconds
#   ./scripts/bench-scale.sh -stores postgres,redis     # some stores only
#
# Ports: 55450 (PostgreSQL) and 56400 (Redis), or $APCORE_PG_PORT and
# $APCORE_REDIS_PORT, so that it can run beside scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

export APCORE_PG_PORT="${APCORE_PG_PORT:-55450}" APCORE_REDIS_PORT="${APCORE_REDIS_PORT:-56400}"
source "$root/scripts/services.sh"
trap stop_services EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
start_services

echo "bench-scale: load average $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores" >&2
cd "$root/benchmarks"
go run ./scale "$@"
