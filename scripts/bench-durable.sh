#!/usr/bin/env bash
# Measures apcore over its durable stores against river (PostgreSQL) and
# asynq (Redis), and against the floor of three single-row writes per task,
# on throwaway servers started as the tests start them (scripts/services.sh),
# with pg_stat_statements loaded so that the server's statements per task
# can be counted. The arguments go to the benchmark
# (benchmarks/durable; see its doc comment for the flags). A full run takes
# a few minutes; it is not part of the tests.
#
#   ./scripts/bench-durable.sh                          # the full table
#   ./scripts/bench-durable.sh -n 1000 -runs 1          # a quick look
#   ./scripts/bench-durable.sh -rows pg1,redis1 -v      # with each run's statements
#   ./scripts/bench-durable.sh -rows pg-backlog1,pg-backlog3 -backlog 20000
#   ./scripts/bench-durable.sh -pool 20 -peer-defaults  # the peers as shipped
#
# Ports: 55440 (PostgreSQL) and 56390 (Redis), or $APCORE_PG_PORT and
# $APCORE_REDIS_PORT, so that it can run beside scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

export APCORE_PG_PORT="${APCORE_PG_PORT:-55440}" APCORE_REDIS_PORT="${APCORE_REDIS_PORT:-56390}"
source "$root/scripts/services.sh"
trap stop_services EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
start_services

# pg_stat_statements must be loaded when the server starts: restart it with
# the library (pg_ctl restart keeps the options it was started with).
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
if [ -f "$pgbin/../lib/pg_stat_statements.so" ]; then
	psql -q "$APCORE_TEST_POSTGRES" -c "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'"
	_as_postgres "$pgbin/pg_ctl" -D "$APCORE_SERVICES_DIR/pg/data" -l "$APCORE_SERVICES_DIR/pg/server.log" -w -t 60 -m fast restart >/dev/null
	psql -q "$APCORE_TEST_POSTGRES" -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"
else
	echo "bench-durable: no pg_stat_statements in $pgbin/../lib: the server's statements will not be counted" >&2
fi

echo "bench-durable: load average $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores" >&2
cd "$root/benchmarks"
go run ./durable "$@"
