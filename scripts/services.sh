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
#
# After start_services, start_redis_cluster (a 3-master Redis Cluster,
# APCORE_TEST_REDIS_CLUSTER) and start_redis_sentinel (a master, a replica
# and three Sentinels, APCORE_TEST_REDIS_SENTINEL) start the servers of
# redisstore's cluster and failover tests; stop_services stops them too.

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

# _daemon runs a command that leaves a server running with only stdin,
# stdout and stderr of ours open: a server must not keep a file the caller
# holds, such as the lock of "flock /tmp/apcore-heavy.lock ./scripts/test.sh",
# which a daemonized redis-server would otherwise hold until it stops.
_daemon() {
	(
		local fd
		for fd in /proc/$BASHPID/fd/*; do
			fd=${fd##*/}
			[ "$fd" -gt 2 ] 2>/dev/null && eval "exec $fd>&-" 2>/dev/null
		done
		if declare -F "$1" >/dev/null; then "$@"; else exec "$@"; fi
	)
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
	_daemon _as_postgres "$pgbin/pg_ctl" -D "$APCORE_SERVICES_DIR/pg/data" -l "$APCORE_SERVICES_DIR/pg/server.log" -w -t 60 \
		-o "-c listen_addresses=127.0.0.1 -p $pg_port -k $APCORE_SERVICES_DIR/pg -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
		start >/dev/null || { cat "$APCORE_SERVICES_DIR/pg/server.log" >&2; return 1; }
	export APCORE_TEST_POSTGRES="postgres://postgres@127.0.0.1:$pg_port/postgres?sslmode=disable"

	echo "services: Redis on 127.0.0.1:$redis_port"
	_daemon redis-server --bind 127.0.0.1 --port "$redis_port" --dir "$APCORE_SERVICES_DIR/redis" \
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
	if [ -z "$APCORE_SERVICES_DIR" ]; then
		_unreserve_ports
		return 0
	fi
	local pgbin
	pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
	if [ -f "$APCORE_SERVICES_DIR/pg/data/postmaster.pid" ]; then
		_as_postgres "$pgbin/pg_ctl" -D "$APCORE_SERVICES_DIR/pg/data" -m immediate -w stop >/dev/null 2>&1 || true
	fi
	local pidfile pid pids=() i
	for pidfile in "$APCORE_SERVICES_DIR"/redis/redis.pid "$APCORE_SERVICES_DIR"/redis-extra/*/*.pid; do
		[ -f "$pidfile" ] || continue
		pid=$(cat "$pidfile")
		kill "$pid" 2>/dev/null && pids+=("$pid")
	done
	# A Redis server writes its log (and removes its pid file) on the way
	# out: wait for them to go before removing their folder.
	for pid in "${pids[@]}"; do
		for i in $(seq 1 100); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -9 "$pid" 2>/dev/null || true
	done
	rm -rf "$APCORE_SERVICES_DIR" 2>/dev/null || { sleep 1; rm -rf "$APCORE_SERVICES_DIR"; }
	APCORE_SERVICES_DIR=""
	_unreserve_ports
}

# _redis_node starts one more redis-server on loopback for the cluster and
# Sentinel tests, in $APCORE_SERVICES_DIR/redis-extra/<name>, with no
# persistence, and waits until it answers. Extra arguments go to
# redis-server. stop_services stops it.
_redis_node() {
	local name="$1" port="$2"
	shift 2
	local dir="$APCORE_SERVICES_DIR/redis-extra/$name" try i
	mkdir -p "$dir"
	for try in $(seq 1 140); do
		_daemon redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" --save "" --appendonly no \
			--daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" "$@" || return 1
		for i in $(seq 1 50); do
			redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1 && return 0
			grep -q 'aborting\|Could not create server TCP' "$dir/redis.log" 2>/dev/null && break
			sleep 0.1
		done
		: >"$dir/redis.log"
		sleep 0.5
	done
	echo "services: redis-server on port $port did not start" >&2
	return 1
}

# _reserve_ports keeps Linux from handing out the given ports (ranges like
# 57001-57006) as the local ports of outgoing connections, when we may: they
# lie in the ephemeral range, and a client connection there, or its
# TIME-WAIT for a minute after, makes a server's bind fail. _redis_node also
# tries again for up to 70s. The ports it adds (those not reserved already)
# are kept in APCORE_RESERVED_BY_US, and stop_services takes exactly those
# out again (_unreserve_ports): the machine's list is left as it was found,
# and ports another run reserved meanwhile stay.
APCORE_RESERVED_BY_US=""
_reserve_ports() {
	local f=/proc/sys/net/ipv4/ip_local_reserved_ports cur added
	[ -w "$f" ] || return 0
	cur=$(cat "$f")
	# The ports of "$@" that the list does not hold yet, one per line.
	added=$(_expand_ports "$(IFS=,; echo "$*")" | grep -vxFf <(_expand_ports "$cur") || true)
	[ -n "$added" ] || return 0
	if echo "${cur:+$cur,}$(IFS=,; echo "$*")" >"$f" 2>/dev/null; then
		APCORE_RESERVED_BY_US=$(printf '%s\n%s\n' "$APCORE_RESERVED_BY_US" "$added" | grep -v '^$' || true)
	fi
}

# _expand_ports prints each port of a list like "57001-57006,57101" on a
# line of its own.
_expand_ports() {
	echo "$1" | tr ',' '\n' | awk -F- 'NF == 1 && $1 != "" { print $1 } NF == 2 { for (p = $1; p <= $2; p++) print p }'
}

# _unreserve_ports takes the ports _reserve_ports added out of the list of
# reserved ports again, leaving every other entry.
_unreserve_ports() {
	local f=/proc/sys/net/ipv4/ip_local_reserved_ports keep
	[ -n "$APCORE_RESERVED_BY_US" ] && [ -w "$f" ] || { APCORE_RESERVED_BY_US=""; return 0; }
	keep=$(_expand_ports "$(cat "$f")" | grep -vxFf <(echo "$APCORE_RESERVED_BY_US") |
		sort -n | awk 'NR == 1 { s = e = $1; next }
			$1 == e + 1 { e = $1; next }
			{ printf "%s%s", sep, (s == e ? s : s "-" e); sep = ","; s = e = $1 }
			END { if (NR) printf "%s%s", sep, (s == e ? s : s "-" e) }' || true)
	# An empty list is written as a bare newline: echo "" does that.
	echo "$keep" >"$f" 2>/dev/null || echo "services: could not restore $f" >&2
	APCORE_RESERVED_BY_US=""
}

# start_redis_cluster starts a Redis Cluster of 3 masters on loopback, ports
# $APCORE_REDIS_CLUSTER_PORTS (default 57001 57002 57003; each node's
# cluster bus on its port + 3, as port + 10000 would be out of range), and
# exports APCORE_TEST_REDIS_CLUSTER (the nodes' addresses, comma-separated).
# Call it after start_services.
start_redis_cluster() {
	[ -n "$APCORE_SERVICES_DIR" ] || { echo "services: start_services first" >&2; return 1; }
	local ports=(${APCORE_REDIS_CLUSTER_PORTS:-57001 57002 57003}) addrs=() p
	echo "services: Redis Cluster on 127.0.0.1:${ports[*]}"
	_reserve_ports "${ports[0]}-$((${ports[2]} + 3))"
	for p in "${ports[@]}"; do
		_redis_node "cluster-$p" "$p" --cluster-enabled yes --cluster-node-timeout 2000 --cluster-port $((p + 3)) \
			--cluster-config-file "$APCORE_SERVICES_DIR/redis-extra/cluster-$p/nodes.conf" || return 1
		addrs+=("127.0.0.1:$p")
	done
	redis-cli --cluster create "${addrs[@]}" --cluster-yes >"$APCORE_SERVICES_DIR/redis-extra/cluster-create.log" 2>&1 ||
		{ cat "$APCORE_SERVICES_DIR/redis-extra/cluster-create.log" >&2; return 1; }
	local i ok
	for i in $(seq 1 100); do
		ok=1
		for p in "${ports[@]}"; do
			redis-cli -h 127.0.0.1 -p "$p" cluster info 2>/dev/null | grep -q '^cluster_state:ok' || ok=0
		done
		[ "$ok" = 1 ] && break
		sleep 0.1
	done
	for p in "${ports[@]}"; do
		redis-cli -h 127.0.0.1 -p "$p" cluster info | grep -q '^cluster_state:ok' || { echo "services: the cluster is not ok" >&2; return 1; }
	done
	export APCORE_TEST_REDIS_CLUSTER
	APCORE_TEST_REDIS_CLUSTER=$(IFS=,; echo "${addrs[*]}")
}

# start_redis_sentinel starts a Redis master, one replica and three
# Sentinels watching them (master name "apcore", quorum 2, down after 2s) on
# loopback, ports $APCORE_REDIS_SENTINEL_PORTS (default: master 57101,
# replica 57102, sentinels 57111 57112 57113), and exports
# APCORE_TEST_REDIS_SENTINEL as "apcore@<sentinel>,<sentinel>,<sentinel>".
# Call it after start_services.
start_redis_sentinel() {
	[ -n "$APCORE_SERVICES_DIR" ] || { echo "services: start_services first" >&2; return 1; }
	local ports=(${APCORE_REDIS_SENTINEL_PORTS:-57101 57102 57111 57112 57113})
	local master="${ports[0]}" replica="${ports[1]}" sentinels=() p dir
	echo "services: Redis master 127.0.0.1:$master, replica :$replica, Sentinels :${ports[*]:2}"
	_reserve_ports "${ports[@]}"
	_redis_node "sentinel-master-$master" "$master" || return 1
	_redis_node "sentinel-replica-$replica" "$replica" --replicaof 127.0.0.1 "$master" || return 1
	for p in "${ports[@]:2}"; do
		dir="$APCORE_SERVICES_DIR/redis-extra/sentinel-$p"
		mkdir -p "$dir"
		cat >"$dir/sentinel.conf" <<CONF
bind 127.0.0.1
port $p
dir $dir
daemonize yes
pidfile $dir/redis.pid
logfile $dir/redis.log
sentinel monitor apcore 127.0.0.1 $master 2
sentinel down-after-milliseconds apcore 2000
sentinel failover-timeout apcore 6000
sentinel parallel-syncs apcore 1
CONF
		_daemon redis-server "$dir/sentinel.conf" --sentinel || return 1
		sentinels+=("127.0.0.1:$p")
	done
	local i
	for i in $(seq 1 100); do
		redis-cli -h 127.0.0.1 -p "$replica" info replication 2>/dev/null | grep -q '^master_link_status:up' &&
			redis-cli -h 127.0.0.1 -p "${ports[2]}" sentinel replicas apcore 2>/dev/null | grep -q "$replica" && break
		sleep 0.1
	done
	redis-cli -h 127.0.0.1 -p "$replica" info replication | grep -q '^master_link_status:up' ||
		{ echo "services: the replica did not sync" >&2; return 1; }
	export APCORE_TEST_REDIS_SENTINEL
	APCORE_TEST_REDIS_SENTINEL="apcore@$(IFS=,; echo "${sentinels[*]}")"
}
