#!/bin/sh
# Run a command in private network and PID namespaces where this "machine"
# has a LAN address: a dummy interface with the given addresses and the
# default route, so that python-banyan's address discovery (a UDP connect to
# a public address) finds the first one, and its process scan (/proc, mounted
# anew) sees only the processes started inside.
#
# Usage: tests/python/lan_ns.sh ADDR/PREFIX[,ADDR/PREFIX...] CMD [ARGS...]
#
# The interface is one end of a veth pair whose other end is in the namespace
# too (the dummy link type is not always available), so nothing leaves it. The command runs as the namespace's first process; when it exits, or
# when this script (unshare) is killed, every process inside is killed too.
# Needs root, or unprivileged user namespaces (then `unshare -r` maps the caller to root inside).
set -eu

if [ "$#" -lt 2 ]; then
    echo "usage: $0 ADDR/PREFIX[,ADDR/PREFIX...] CMD [ARGS...]" >&2
    exit 2
fi
ns_script=lan_ns.sh
# shellcheck source=tests/python/ns_tools.sh
. "$(dirname "$0")/ns_tools.sh"
addresses=$1
shift
# Inside the namespace: $0 is the path of ip, $1 the addresses, the rest the
# command.
# shellcheck disable=SC2016,SC2086
exec unshare $userns --net --pid --fork --mount-proc --kill-child sh -c '
    ip=$0 addresses=$1
    shift
    fail() { echo "lan_ns.sh: $1" >&2; exit 2; }
    "$ip" link set lo up || fail "cannot bring up lo in the new namespace"
    "$ip" link add lan0 type veth peer name lan0-peer || fail "cannot create a veth pair"
    "$ip" link set lan0-peer up || fail "cannot bring up lan0-peer"
    for address in $(echo "$addresses" | tr , " "); do
        "$ip" addr add "$address" dev lan0 || fail "cannot add $address"
    done
    "$ip" link set lan0 up || fail "cannot bring up lan0"
    "$ip" route add default dev lan0 || fail "cannot add the default route"
    exec "$@"' "$ip_cmd" "$addresses" "$@"
