#!/usr/bin/env bash
# A veth-namespace testbed for `microseg run`.
#
#   scripts/testbed.sh up   [PREFIX]   build it, write a config and rules file
#   scripts/testbed.sh down [PREFIX]   remove everything with that prefix
#
# Four workloads, each a network namespace PREFIX-NAME (web, app, db and an
# outsider, out) with one veth: inside it is eth0 with 10.203.SUBNET.N/24 and
# fd00:203:SUBNET::N/64 (N = 1..4); outside it is the switch port
# PREFIXNAMEh, with no address and IPv6 off, so nothing reaches the host's
# own stack. Traffic between workloads can only cross the switch.
#
# Environment: SUBNET (default 20), QUEUES (veth queues, default 1; a
# config with N workers needs N), API (default 127.0.0.1:9870), DIR (where
# config.yaml, rules.yaml and an API tokens file go; default
# /tmp/microseg-testbed-PREFIX).
# PREFIX (default mst) must be at most 10 characters: interface names are
# limited to 15. Distinct prefixes let testbeds run side by side. `up`
# removes what it built if it fails half way.
set -euo pipefail

action=${1:-}
prefix=${2:-mst}
subnet=${SUBNET:-20}
queues=${QUEUES:-1}
api=${API:-127.0.0.1:9870}
dir=${DIR:-/tmp/microseg-testbed-$prefix}
workloads=(web app db out)

usage() {
  echo "usage: $0 up|down [PREFIX]   (PREFIX: 1-10 of [a-z0-9], default mst)" >&2
  exit 2
}

[[ $prefix =~ ^[a-z0-9]{1,10}$ ]] || usage
[[ $subnet =~ ^[0-9]{1,3}$ && $subnet -le 255 ]] || { echo "SUBNET must be 0-255" >&2; exit 2; }
[[ $queues =~ ^[1-9][0-9]?$ ]] || { echo "QUEUES must be 1-99" >&2; exit 2; }
if [ "$(id -u)" -ne 0 ]; then
  echo "testbed.sh: run as root (network namespaces, veth)" >&2
  exit 1
fi

down() {
  for name in "${workloads[@]}"; do
    ip link del "${prefix}${name}h" 2>/dev/null || true
    ip netns del "${prefix}-${name}" 2>/dev/null || true
  done
  rm -f "$dir/config.yaml" "$dir/rules.yaml" "$dir/tokens"
  rm -rf "$dir/state"
  rmdir "$dir" 2>/dev/null || true
}

up() {
  trap 'echo "testbed.sh: setup failed; removing what was built" >&2; down' ERR
  local host=0
  for name in "${workloads[@]}"; do
    host=$((host + 1))
    local ns="${prefix}-${name}" port="${prefix}${name}h" peer="${prefix}${name}p"
    ip netns add "$ns"
    ip link add "$port" numtxqueues "$queues" numrxqueues "$queues" type veth \
      peer name "$peer" numtxqueues "$queues" numrxqueues "$queues"
    sysctl -qw "net.ipv6.conf.${port}.disable_ipv6=1"
    ip link set "$peer" netns "$ns"
    ip link set "$port" up
    ip -n "$ns" link set lo up
    ip -n "$ns" link set "$peer" name eth0
    ip -n "$ns" addr add "10.203.${subnet}.${host}/24" dev eth0
    ip -n "$ns" -6 addr add "fd00:203:${subnet}::${host}/64" dev eth0 nodad
    ip -n "$ns" link set eth0 up
    # veth leaves checksums to the receiver (CHECKSUM_PARTIAL), but AF_XDP
    # copy mode forwards frames as they are: workloads must fill them in.
    ip netns exec "$ns" ethtool -K eth0 tx off >/dev/null
    # GRO gives the workload's veth end a NAPI context, without which veth
    # silently drops the frames the XDP fast path redirects to it
    # (TESTBED-NOTES); the appliance's ports have their XDP program.
    ip netns exec "$ns" ethtool -K eth0 gro on >/dev/null
  done
  mkdir -p "$dir"
  # An admin token for the API (the config names this file).
  (umask 077 && echo "admin testbed $(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$dir/tokens")
  cat >"$dir/config.yaml" <<EOF
# Written by scripts/testbed.sh for testbed "$prefix".
ports: [${prefix}webh, ${prefix}apph, ${prefix}dbh, ${prefix}outh]
workers: 1
poll_mode: adaptive
rules: rules.yaml
state_dir: state
api:
  listen: "$api"
  tokens_file: tokens
EOF
  cat >"$dir/rules.yaml" <<EOF
# The sample segmentation policy: web -> app on tcp/8080, app -> db on
# tcp/5432, pings from web to app; everything else denied.
default_action: deny
rules:
  - name: web-to-app
    from: 10.203.${subnet}.1
    to: 10.203.${subnet}.2
    services: [tcp/8080, icmp/8]
    action: allow
  - name: app-to-db
    from: 10.203.${subnet}.2
    to: 10.203.${subnet}.3
    services: [tcp/5432]
    action: allow
  - name: web-to-app-v6
    from: fd00:203:${subnet}::1
    to: fd00:203:${subnet}::2
    services: [tcp/8080, icmpv6/128]
    action: allow
EOF
  trap - ERR
  echo "testbed $prefix up: namespaces ${workloads[*]/#/${prefix}-}"
  echo "  addresses 10.203.${subnet}.1-4 (web app db out), fd00:203:${subnet}::1-4"
  echo "  run: microseg run -c $dir/config.yaml"
  echo "  API token: $dir/tokens (curl -H \"Authorization: Bearer \$(awk '{print \$3}' $dir/tokens)\" ...)"
}

case "$action" in
  up) up ;;
  down) down ;;
  *) usage ;;
esac
