#!/bin/sh
# Run a command in a private network namespace where only loopback is up.
#
# Usage: tests/python/netns.sh CMD [ARGS...]
#
# Inside, 127.0.0.1 is the only address and no port is shared with the host or
# with other namespaces, so tests may use any port, including Banyan's defaults
# 43124/43125. python-banyan's backplane, which binds the address found by a UDP
# connect to 8.8.8.8, falls back to 127.0.0.1 there.
#
# The command is exec'd (unshare and sh exec too), so it keeps this script's PID
# and receives its signals. Creating the namespace needs root, or unprivileged
# user namespaces (then `unshare -r` maps the caller to root inside).
set -eu

if [ "$#" -eq 0 ]; then
    echo "usage: $0 CMD [ARGS...]" >&2
    exit 2
fi
ns_script=netns.sh
# shellcheck source=tests/python/ns_tools.sh
. "$(dirname "$0")/ns_tools.sh"
# Inside the namespace: $0 is the path of ip, "$@" the command.
# shellcheck disable=SC2016,SC2086
exec unshare $userns -n sh -c '
    "$0" link set lo up || { echo "netns.sh: cannot bring up lo in the new namespace" >&2; exit 2; }
    exec "$@"' "$ip_cmd" "$@"
