# Sourced by netns.sh and lan_ns.sh: finds unshare and ip, and whether a user
# namespace is needed, or exits 2 saying what is missing. Sets `ip_cmd` and
# `userns`; `$ns_script` names the caller in the messages.

if ! command -v unshare >/dev/null 2>&1; then
    echo "$ns_script: unshare (util-linux) is not installed" >&2
    exit 2
fi
ip_cmd=$(command -v ip 2>/dev/null || true)
for candidate in /usr/sbin/ip /sbin/ip /usr/bin/ip; do
    if [ -z "$ip_cmd" ] && [ -x "$candidate" ]; then
        ip_cmd=$candidate
    fi
done
if [ -z "$ip_cmd" ]; then
    echo "$ns_script: ip (iproute2) is not installed" >&2
    exit 2
fi

if [ "$(id -u)" -eq 0 ]; then
    userns=""
else
    userns="-r"
fi
