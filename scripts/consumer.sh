#!/usr/bin/env bash
# Checks that the repository's modules can be used from outside it, the way
# a user gets them with go get, without the repository's go.work:
#
#  1. scripts/modproxy lays out the core, sqlstore, redisstore and
#     examples/durable at v0.2.0 (the version they require of each other)
#     as a module proxy in a temporary folder, from the files of the
#     working tree that git does not ignore;
#  2. the go.mod and go.sum of each module that requires another one are
#     what "go mod tidy" makes of them outside the workspace, apart from
#     the checksums of the locally built v0.2.0. Tidy looks at every
#     platform and at the tests of dependencies, so what the module cache
#     lacks for it comes from the usual GOPROXY, checked by the checksum
#     database;
#  3. scripts/consumer is copied to a temporary folder outside the
#     repository, where go get fetches the three library modules at v0.2.0
#     from that proxy with no network, and the program is vetted, built and
#     run, and its output checked.
#
# In step 3 the third-party modules (pgx, modernc.org/sqlite, go-redis, ...)
# come from the module cache's download folder, which has the layout of a
# module proxy: GOPROXY lists only file:// URLs. Every download goes into a
# temporary module cache, so the locally built v0.2.0 never enters the real
# one (where it would stand for the release later). scripts/test.sh runs
# this script; it also runs alone: ./scripts/consumer.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
version=v0.2.0
core=github.com/apcore-go/apcore

tmp=$(mktemp -d)
cleanup() {
	chmod -R u+w "$tmp" 2>/dev/null || true # the module cache is read-only
	rm -rf "$tmp"
}
trap cleanup EXIT

# What the modules need from elsewhere must be in the module cache first:
# in workspace mode, with the usual GOPROXY (a no-op when it is there).
for mod in . sqlstore redisstore examples/durable examples/transactional cmd/apcore; do
	(cd "$root/$mod" && go list -deps -test ./... >/dev/null)
done
cache="$(go env GOMODCACHE)/cache/download"

echo "local module proxy at $version in $tmp/proxy:"
(cd "$root/scripts/modproxy" && GOWORK=off go build -o "$tmp/modproxy" .)
"$tmp/modproxy" -version "$version" -out "$tmp/proxy" . sqlstore redisstore examples/durable
for m in $core $core/sqlstore $core/redisstore $core/examples/durable; do
	for f in list "$version.info" "$version.mod" "$version.zip"; do
		[ -s "$tmp/proxy/$m/@v/$f" ] || { echo "the proxy lacks $m/@v/$f"; exit 1; }
	done
done

# Outside the workspace, with a module cache of their own; offline uses no
# proxy but the two folders, and no checksum database. -trimpath keeps the
# temporary module cache's path out of the build cache's keys, so that the
# packages compiled from it (modernc.org/sqlite takes a minute) are reused
# by the next run.
outside() {
	GOWORK=off GOFLAGS="-mod=mod -trimpath" GOTOOLCHAIN=local GOPRIVATE= GONOPROXY= GOINSECURE= \
		GOMODCACHE="$tmp/modcache" "$@"
}
offline() {
	GOSUMDB=off GONOSUMDB= GOPROXY="file://$tmp/proxy,file://$cache" outside "$@"
}

echo
echo "go mod tidy outside the workspace changes nothing but the checksums of $core* $version:"
for mod in sqlstore redisstore examples/durable examples/transactional cmd/apcore; do
	mkdir -p "$tmp/tidy/$mod"
	cp "$root/$mod/go.mod" "$root/$mod/go.sum" "$tmp/tidy/$mod/"
	(cd "$root/$mod" && GONOSUMDB=$core GOPROXY="file://$tmp/proxy,file://$cache,$(go env GOPROXY)" \
		outside go mod tidy -modfile="$tmp/tidy/$mod/go.mod")
	if ! diff -u "$root/$mod/go.mod" "$tmp/tidy/$mod/go.mod"; then
		echo "$mod/go.mod is not tidy outside the workspace"; exit 1
	fi
	extra=$(diff "$root/$mod/go.sum" "$tmp/tidy/$mod/go.sum" | grep -v "^> $core[/ ]" | grep '^[<>]' || true)
	if [ -n "$extra" ]; then
		echo "$mod/go.sum differs from what go mod tidy makes of it:"; echo "$extra"; exit 1
	fi
	echo "  $mod: tidy"
done

echo
echo "a consumer outside the repository, in $tmp/consumer:"
mkdir "$tmp/consumer"
cp "$root/scripts/consumer/go.mod" "$root/scripts/consumer/main.go" "$tmp/consumer/"
cd "$tmp/consumer"
offline go get "$core@$version" "$core/sqlstore@$version" "$core/redisstore@$version"
offline go vet .
offline go build -o apcore-consumer .
offline go list -m $core $core/sqlstore $core/redisstore | sed 's/^/  uses /'
./apcore-consumer | tee out | sed 's/^/  prints: /'
for want in \
	"task math.double(21): completed, result 42" \
	"SqlTaskStore record: completed, result 42" \
	"redisstore.New with no Redis: TASK_STORE_UNAVAILABLE"; do
	if ! grep -qxF "$want" out; then
		echo "the consumer did not print: $want"; exit 1
	fi
done
echo "the consumer got, built and ran the modules at $version"
