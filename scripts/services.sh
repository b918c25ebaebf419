#!/usr/bin/env bash
# Starts throwaway PostgreSQL and Redis servers on loopback for the store
# tests, with their data in a temporary folder, installing the Debian
# packages first when they are missing. Source it; it exports
# APCORE_TEST_POSTGRES and APCORE_TEST_REDIS and defines stop_services.
#
#   source scripts/services.sh && start_services && ...; stop_services
#
# Ports: 55432 (PostgreSQL) and 56379 (Redis), or $APCORE_PG_PORT and
# $APCORE_REDIS_PORT.

APCORE_SERVICES_DIR=""

_apt_install() {
	if [ "$(id -u)" != 0 ]; then
		echo "services: $* missing and not root; install it (apt-get install $*)" >&2
		return 1
	fi
	if [ -z "${_APT_UPDATED:-}" ]; then
		apt-get update -qq >/dev/null
		_APT_UPDATED=1
	fi
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# _as_postgres runs a command as the postgres user when we are root
# (initdb refuses to run as root), as ourselves otherwise.
_as_postgres() {
	if [ "$(id -u)" = 0 ]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

start_services() {
	local pg_port="${APCORE_PG_PORT:-55432}" redis_port="${APCORE_REDIS_PORT:-56379}"
	local pgbin
	pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
	if [ -z "$pgbin" ] || [ ! -x "$pgbin/initdb" ]; then
		echo "services: installing postgresql"
		_apt_install postgresql || return 1
		pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
	fi
	if ! command -v redis-server >/dev/null 2>&1; then
		echo "services: installing redis-server"
		_apt_install redis-server || return 1
	fi

	APCORE_SERVICES_DIR=$(mktemp -d /tmp/apcore-services.XXXXXX)
	chmod 755 "$APCORE_SERVICES_DIR"
	mkdir -p "$APCORE_SERVICES_DIR/pg" "$APCORE_SERVICES_DIR/redis"
	if [ "$(id -u)" = 0 ]; then
		chown postgres "$APCORE_SERVICES_DIR/pg"
	fi

	echo "services: PostgreSQL on 127.0.0.1:$pg_port ($pgbin)"
	_as_postgres "$pgbin/initdb" -D "$APCORE_SERVICES_DIR/pg/data" -U postgres -A trust --no-sync >"$APCORE_SERVICES_DIR/pg/initdb.log" 2>&1 ||
		{ cat "$APCORE_SERVICES_DIR/pg/initdb.log" >&2; return 1; }
	_as_postgres "$pgbin/pg_ctl" -D "$APCORE_SERVICES_DIR/pg/data" -l "$APCORE_SERVICES_DIR/pg/server.log" -w -t 60 \
		-o "-c listen_addresses=127.0.0.1 -p $pg_port -k $APCORE_SERVICES_DIR/pg -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
		start >/dev/null || { cat "$APCORE_SERVICES_DIR/pg/server.log" >&2; return 1; }
	export APCORE_TEST_POSTGRES="postgres://postgres@127.0.0.1:$pg_port/postgres?sslmode=disable"

	echo "services: Redis on 127.0.0.1:$redis_port"
	redis-server --bind 127.0.0.1 --port "$redis_port" --dir "$APCORE_SERVICES_DIR/redis" \
		--save "" --appendonly no --daemonize yes --pidfile "$APCORE_SERVICES_DIR/redis/redis.pid" \
		--logfile "$APCORE_SERVICES_DIR/redis/redis.log" || return 1
	local i
	for i in $(seq 1 100); do
		redis-cli -h 127.0.0.1 -p "$redis_port" ping >/dev/null 2>&1 && break
		sleep 0.1
	done
	redis-cli -h 127.0.0.1 -p "$redis_port" ping >/dev/null || { cat "$APCORE_SERVICES_DIR/redis/redis.log" >&2; return 1; }
	export APCORE_TEST_REDIS="redis://127.0.0.1:$redis_port/0"
}

stop_services() {
	[ -n "$APCORE_SERVICES_DIR" ] || return 0
	local pgbin
	pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
	if [ -f "$APCORE_SERVICES_DIR/pg/data/postmaster.pid" ]; then
		_as_postgres "$pgbin/pg_ctl" -D "$APCORE_SERVICES_DIR/pg/data" -m immediate -w stop >/dev/null 2>&1 || true
	fi
	if [ -f "$APCORE_SERVICES_DIR/redis/redis.pid" ]; then
		kill "$(cat "$APCORE_SERVICES_DIR/redis/redis.pid")" 2>/dev/null || true
	fi
	rm -rf "$APCORE_SERVICES_DIR"
	APCORE_SERVICES_DIR=""
}
