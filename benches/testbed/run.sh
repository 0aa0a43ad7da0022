#!/usr/bin/env bash
# benches/testbed/run.sh — switch throughput benchmark on veth testbeds.
#
#   sudo bash benches/testbed/run.sh            # full: 3 runs x 10 s per configuration
#   QUICK=1 bash benches/testbed/run.sh         # short: 1 run x 2 s, for development
#   ONLY='microseg-.*acl1_1k' bash ...          # run the configurations matching a regex
#   (to compare two builds or settings in alternation: benches/testbed/ab.sh)
#
# Writes testbed.csv (one row per run), testbed.md (medians and ratios) and
# latency.csv (ping RTTs) into BENCH_OUT (default target/testbed-bench/results/;
# `make bench-testbed` publishes them into docs/bench/ with their run's
# commit and time); logs (microseg status JSON, generator output) go to
# target/testbed-bench/. Root only. Environment: RUNS, DURATION (s per
# run), WARMUP (s before each measurement), IDLE (s of idle CPU
# measurement), POLL_MODE (adaptive|busy, microseg and the bare
# forwarder), FEW (flows in "few flows", default 16), MANY (default
# 1048576), ONLY (regex over configuration names; latency ones are
# latency-CONFIG), PINGS (per latency measurement), PING_INTERVAL (s),
# LOAD_PPS (background load), FRAME_LEN (bytes without FCS, default
# 60), FRAMES_PER_PORT (UMEM frames per port of microseg and the bare
# forwarder, default 4096), BARE_FLAGS (extra flags of bare-forward,
# e.g. --shared-umem), BENCH_OUT (folder of the results, default
# target/testbed-bench/results), FILL (1: a fill run before the many-flows runs, below;
# 0: none), SETTLE_RUNS (most extra fill runs for the fast path to install
# every flow, default 3), PAIRS (pairs of the paired phase, below; default
# 5, QUICK 1; 0: no pairing), NO_BUILD=1.
#
# ---------------------------------------------------------------------------
# Topology (built fresh for every configuration, torn down after it):
#
#   ns PFX-gen                 ns PFX-sw                      ns PFX-sink
#   PFXg 10.203.1.1  <-veth->  PFXgh   [device under test]   PFXsh <-veth-> PFXs 10.203.2.1
#   (generator)                                                             (sink: XDP drop)
#
# PFX is "mb" + 4 hex digits of this script's PID, so several copies (or
# other testbeds) do not collide; the paired phase (below) has a second
# testbed up beside it, the same with "mc". Only these three namespaces and two veth
# pairs are created; addresses are 10.203.1.1 and 10.203.2.1 (/24 and a
# router PFX-sw for kernel forwarding; /16, one L2 segment, through the
# switches) inside the namespaces only; no port of the testbed is in the host's namespace, so no
# frame can leave it. IPv6 is off on every testbed interface.
#
# Pinning (2 cores): the generator runs on CPU 0 (GEN_CPU), the device under
# test on CPU 1 (DUT_CPU). The sink's XDP program runs in the NAPI of PFXs,
# which veth schedules on the CPU that transmitted to it: CPU 1 in every
# configuration. The sink's reader process (reads the counters every 200
# ms) is on CPU 0.
#
# Generator: `testbed-xdp gen` (benches/bin/testbed_xdp.rs) runs the XDP
# program benches/testbed/bpf/gen.bpf.c with BPF_PROG_RUN and
# BPF_F_TEST_XDP_LIVE_FRAMES in PFX-gen, pinned to CPU 0: the kernel runs
# the program on frames built from a template and transmits them out of
# PFXg (XDP_TX), ~5 Mpps from one core, far above any device under test
# here. A kernel that refuses live frames (EPERM: seen on a locked-down
# 6.18 build) gets the generator's XDP loop instead: a veth pair of its own
# in PFX-gen (PFXglb, PFXglt; 10.250.250.1/30 on one end for seeding), in
# which seeded frames circle in XDP and each round broadcasts a copy out
# of PFXg (~2.5 Mpps offered from CPU 0 here). testbed.md names which one a
# run used. Frames are 60 bytes (a 64-byte Ethernet frame less its FCS, which
# veth does not carry): Ethernet, IPv4 10.203.1.1 -> 10.203.2.1, UDP, UDP
# checksum 0. Live-frames mode recycles its pages, and a forwarding path
# may edit frames in place (kernel forwarding: TTL, MACs), so the program
# rewrites all headers from its template on every frame, then sets the UDP
# ports of the next flow, round robin: flow i has source port 10000 +
# i % 50000 and destination port 5000 + i / 50000. "few" = 16 flows,
# "many" = 1,048,576 distinct 5-tuples. The generator floods: the device
# under test is always overloaded, so a rate is the forwarding rate under
# overload (excess frames are dropped where the DUT cannot take them).
#
# Sink: `testbed-xdp sink` attaches benches/testbed/bpf/sink.bpf.c to PFXs
# (the sink's own veth end): it counts IPv4/UDP frames in a per-CPU map and
# drops them (XDP_DROP; ~6 Mpps on this machine); other frames (ARP, ICMP)
# go on to the sink namespace's stack, which answers them. A run's rate is
# (counter after - counter before) / (time between the two readings), both
# readings taken by the sink process, over DURATION seconds that start
# WARMUP seconds after the generator (so flows are set up and queues
# filled before measuring). Median over RUNS runs (default 3 x 10 s).
# The device under test and its tables are fresh for each configuration
# and kept across its runs. With many flows, a fill run (run 0 in the
# CSV, as long as a measured run) comes first and sets up the flows:
# what it measures is mostly flow setup (each flow's first frame walks
# the rules, is admitted, for the fast path also installed in XDP), so it
# is reported beside the median, not in it; the median is the forwarding
# rate of set-up flows, for every configuration alike (the kernel's
# conntrack fills in its fill run too). The fast path installs flows in
# XDP behind the traffic, so one fill run can leave part of a million
# flows in userspace: up to SETTLE_RUNS (default 3) more fill runs follow
# until its status API counts every flow installed (settle_fast_path).
#
# Configurations (every one with FEW and with MANY flows):
#   bare-afxdp      `bare-forward` (benches/bin/bare_forward.rs): microseg's
#                   XskPort on PFXgh and PFXsh, every frame copied to the
#                   other port; no parsing, classification, conntrack or
#                   MAC learning. The in-run ceiling of the AF_XDP design.
#   microseg-*      `microseg run` in PFX-sw, one worker pinned to CPU 1 by
#                   its config (its idle API threads are not pinned:
#                   microseg refuses `cpus: [1]` under taskset), POLL_MODE,
#                   state_dir and a viewer token in a temporary directory,
#                   4096 frames per port, conntrack max 2,097,152 entries
#                   (per-source limit as high). The generator sends to the
#                   sink's MAC; the sink pings once first so that the
#                   switch learns its MAC (else frames are flooded).
#                   Rules: "0rules" = no rules, default allow; "acl1_1k",
#                   "acl1_10k" = the ClassBench set converted by
#                   classbench_rules.py (see its header: every rule allow,
#                   the set's final catch-all replaced by a rule allowing
#                   the benchmark traffic, which matches no other rule, so
#                   every new flow walks all rules before it is admitted).
#   microseg-fastpath-acl1_10k
#                   the same with `fast_path: true`: once a flow is
#                   admitted, the XDP program on PFXgh forwards its frames
#                   to PFXsh itself (XDP_REDIRECT through a devmap). That
#                   program then does the forwarding work, so PFXgh's NAPI
#                   is made threaded and pinned to the DUT core, as for
#                   kernel forwarding below (the worker, on the same core,
#                   only sees each flow's first frames).
#   kernel-norules  Linux IP forwarding in PFX-sw (PFXgh 10.203.1.254,
#                   PFXsh 10.203.2.254, static neighbour entry for the
#                   sink, which answers nothing), no nftables table, so no
#                   conntrack either. The generator sends to PFXgh's MAC.
#   kernel-nft-linear-*, kernel-nft-vmap-*
#                   the same forwarding with the same rule set in nftables
#                   (forward hook, policy drop, conntrack on: a flow's first
#                   packet walks the rules and an admitting rule sets the
#                   conntrack mark; later packets match `ct mark 1 accept`;
#                   see classbench_rules.py). "linear": one rule per
#                   ClassBench rule. "vmap": the same rules as elements of
#                   interval verdict maps on concatenations (addresses .
#                   protocol . port, and shorter shapes), several maps
#                   where elements overlap.
#   Kernel forwarding runs in PFXgh's NAPI, which is made threaded
#   (/sys/class/net/PFXgh/threaded) and its kthread pinned to CPU 1, so
#   that the forwarding work is on the DUT core, not on the generator's.
#   (With microseg the XDP program on PFXgh, which copies each frame into
#   the worker's UMEM, runs in softirq on the generator's core, CPU 0, as
#   in TESTBED-NOTES; putting it on the worker's core collapses AF_XDP
#   throughput to 0.17-0.39 Mpps there. This favours the AF_XDP rows by
#   that receive copy; the report says so.)
#   GRO is switched on on PFXgh and PFXsh in every configuration: veth
#   delivers XDP_TX'd frames only to a peer with NAPI (an XDP program or
#   GRO); frames are single 60-byte UDP packets, so GRO merges nothing.
#
# Paired phase: the 90% target compares microseg-acl1_10k with
# bare-afxdp "in the same run", and measured minutes apart their ratio
# moves by +-5% with the shared machine's drift. So, for each flow count,
# the two run in alternation: each on its own testbed (prefixes mb and
# mc), both up for the whole phase, PAIRS pairs of one run each (bare
# first in odd pairs, microseg first in even ones), after each one's fill
# run. The other is idle meanwhile (adaptive mode sleeps; microseg's
# conntrack entries, 30 s UDP timeout, outlive the ~15 s pause). Rows of
# the pairs carry their pair number in the CSV's `pair` column; the
# report's target is the median of the pairs' ratios microseg / bare
# (the table's medians come from the same runs). ONLY selecting one of
# the two, or PAIRS=0, measures them as ordinary configurations.
#
# Latency: for bare-afxdp, kernel-norules and microseg-0rules (conntrack
# on; also in busy poll mode when POLL_MODE is adaptive), after the throughput runs, a fresh topology each: `ping -n -c PINGS
# -i PING_INTERVAL` from the generator's namespace to the sink
# (10.203.2.1; the reply comes back through the device under test), first
# idle, then under a steady background load of LOAD_PPS UDP datagrams/s
# (60-byte frames, `testbed-xdp load`, paced per millisecond, from the
# generator's namespace to the sink, which drops them in XDP). Ping and
# load run on CPU 0, the device under test on CPU 1, as above. Kernel
# forwarding: the sink routes 10.203.1.0/24 back via 10.203.2.254.
# Per-reply RTTs are reduced by ping_stats.py to median, p99 (nearest
# rank), mean and max; rows go to latency.csv in BENCH_OUT, raw ping output
# to target/testbed-bench/latency-*.txt. PINGS=0 skips the latency part.
#
# Idle CPU: in adaptive mode, microseg with acl1_10k is left without
# traffic for IDLE seconds twice, right after it starts (empty tables) and
# after the many-flows runs (1M conntrack entries waiting to expire), and
# its process CPU time (utime + stime in /proc/PID/stat, all threads; clock-tick resolution,
# 0.1% over 10 s) is reported as
# % of one core.
#
# Host state touched: net.netfilter.nf_conntrack_max and
# nf_conntrack_buckets are global (not per namespace); for the kernel's
# 1M-flow runs they are raised to 2,097,152 / 1,048,576 and restored on
# exit. Nothing else outside the testbed namespaces is changed.
#
# Teardown: a trap on EXIT, INT and TERM stops the processes this script
# started (by PID), deletes the namespaces (which deletes the veths),
# restores the sysctls, and checks with `ip netns list` and `ip link` that
# nothing with the prefix is left.
# ---------------------------------------------------------------------------
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE="$ROOT/benches/testbed"
QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
    RUNS=${RUNS:-1}; DURATION=${DURATION:-2}; WARMUP=${WARMUP:-1}; IDLE=${IDLE:-2}
    PINGS=${PINGS:-200}
else
    RUNS=${RUNS:-3}; DURATION=${DURATION:-10}; WARMUP=${WARMUP:-3}; IDLE=${IDLE:-10}
    PINGS=${PINGS:-2000}
fi
PAIRS=${PAIRS:-$((QUICK == 1 ? 1 : 5))}
[[ $PAIRS =~ ^[0-9]+$ ]] || { echo "PAIRS must be a whole number, not '$PAIRS'" >&2; exit 2; }
FILL=${FILL:-1}
[[ $FILL == 0 || $FILL == 1 ]] || { echo "FILL must be 0 or 1, not '$FILL'" >&2; exit 2; }
SETTLE_RUNS=${SETTLE_RUNS:-3}
[[ $SETTLE_RUNS =~ ^[0-9]+$ ]] || { echo "SETTLE_RUNS must be a whole number, not '$SETTLE_RUNS'" >&2; exit 2; }
PING_INTERVAL=${PING_INTERVAL:-0.005}
LOAD_PPS=${LOAD_PPS:-100000}
POLL_MODE=${POLL_MODE:-adaptive}
FRAME_LEN=${FRAME_LEN:-60}
FRAMES_PER_PORT=${FRAMES_PER_PORT:-4096}
[[ $FRAMES_PER_PORT =~ ^[0-9]+$ ]] && ((FRAMES_PER_PORT >= 64 && FRAMES_PER_PORT <= 1048576
    && (FRAMES_PER_PORT & (FRAMES_PER_PORT - 1)) == 0)) \
    || { echo "FRAMES_PER_PORT must be a power of two from 64 to 1048576, not '$FRAMES_PER_PORT'" >&2; exit 2; }
FEW=${FEW:-16}
MANY=${MANY:-1048576}
ONLY=${ONLY:-.}
GEN_CPU=0
DUT_CPU=1
SPORT_BASE=10000
SPORT_SPAN=50000
DPORT_BASE=5000
CLASSBENCH=${MICROSEG_CLASSBENCH:-$ROOT/../shared/classbench}
TARGET=$(cd "$ROOT" && mkdir -p "${CARGO_TARGET_DIR:-target}" && cd "${CARGO_TARGET_DIR:-target}" && pwd)
LOGS="$TARGET/testbed-bench"
# Not docs/bench/ by default: what is published there is named with its
# run (commit, time) by `make bench` / `make bench-testbed`.
OUT=${BENCH_OUT:-$LOGS/results}
CSV="$OUT/testbed.csv"
LATENCY_CSV="$OUT/latency.csv"
MD="$OUT/testbed.md"
BIN="$TARGET/release"

# Testbed slots: one configuration at a time uses slot 0; the paired
# phase (run_pair) has slots 0 and 1 up at once. A slot's prefix is "mb"
# (slot 0) or "mc" (slot 1) + 4 hex digits of this script's PID.
PREFIXES=("$(printf 'mb%04x' $(($$ & 0xffff)))" "$(printf 'mc%04x' $(($$ & 0xffff)))")
WORK=$(mktemp -d "/tmp/microseg-bench-${PREFIXES[0]}.XXXX")
# use_testbed slot: the names and files below are the slot's from now on:
# P (prefix), namespaces, interfaces, TB (its scratch folder: sink, DUT
# and generator logs, microseg's config and state), DUT_PID and the
# configuration it runs (CONFIG, KIND, RULESET, DMAC).
declare -A SLOT_DUT=() SLOT_CONFIG=() SLOT_KIND=() SLOT_RULESET=() SLOT_DMAC=()
SLOT=0
use_testbed() {
    SLOT=$1
    P=${PREFIXES[$SLOT]}
    NS_GEN=$P-gen NS_SW=$P-sw NS_SINK=$P-sink
    IF_G=${P}g IF_GH=${P}gh IF_S=${P}s IF_SH=${P}sh
    TB="$WORK/$P"
    mkdir -p "$TB"
    DUT_PID=${SLOT_DUT[$SLOT]:-}
    CONFIG=${SLOT_CONFIG[$SLOT]:-} KIND=${SLOT_KIND[$SLOT]:-}
    RULESET=${SLOT_RULESET[$SLOT]:-} DMAC=${SLOT_DMAC[$SLOT]:-}
}
use_testbed 0
PIDS=()
SYSCTL_SAVED=()
declare -A GENERATORS=() # how the generator made its frames, per gen.log

log() { printf '%s %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ $(id -u) == 0 ]] || die "run as root (namespaces, XDP)"

# --- teardown ---------------------------------------------------------------
stop_pids() {
    local pid
    for pid in "${PIDS[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
    PIDS=()
}

topology_down() {
    stop_pids
    local ns pid
    # Safety net: anything still running inside the testbed's namespaces
    # was started by this script; stop it by PID before deleting them.
    for ns in "$NS_GEN" "$NS_SW" "$NS_SINK"; do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do
            log "stopping leftover PID $pid in $ns"; kill -TERM "$pid" 2>/dev/null || true
        done
    done
    sleep 0.2
    for ns in "$NS_GEN" "$NS_SW" "$NS_SINK"; do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
        ip netns del "$ns" 2>/dev/null || true
    done
    # Veths die with their namespace; these only exist if setup failed
    # before moving them.
    for ifc in "$IF_G" "$IF_S"; do ip link del "$ifc" 2>/dev/null || true; done
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local slot
    for slot in 0 1; do use_testbed "$slot"; topology_down; done
    local entry
    for entry in "${SYSCTL_SAVED[@]}"; do sysctl -qw "$entry" >/dev/null || true; done
    rm -rf "$WORK"
    local prefixes="${PREFIXES[0]}|${PREFIXES[1]}"
    if ip netns list | grep -Eq "^($prefixes)-" || ip -o link | grep -Eq ": ($prefixes)"; then
        log "WARNING: leftovers with prefix $prefixes:"
        ip netns list | grep -E "^($prefixes)-" >&2 || true
        ip -o link | grep -E ": ($prefixes)" >&2 || true
    else
        log "teardown: no namespace or link with prefix ${PREFIXES[0]} or ${PREFIXES[1]} left"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'log interrupted; exit 130' INT TERM

raise_sysctl() { # key value: raise a global sysctl, restored on exit
    local old
    old=$(sysctl -n "$1")
    if ((old < $2)); then
        SYSCTL_SAVED+=("$1=$old")
        sysctl -qw "$1=$2"
    fi
}

# --- build ------------------------------------------------------------------
if [[ ${NO_BUILD:-0} != 1 ]]; then
    log "building (release)"
    (cd "$ROOT" && cargo build --release -q -p microseg-control --bin microseg \
        && cargo build --release -q -p microseg-benches --bin testbed-xdp --bin bare-forward)
fi
for b in microseg testbed-xdp bare-forward; do [[ -x $BIN/$b ]] || die "$BIN/$b missing"; done
mkdir -p "$LOGS" "$OUT"

# --- rule sets ----------------------------------------------------------------
# Converted once, cached in target/testbed-bench/rules/SET (redone when the
# converter or the ClassBench file is newer).
for set in acl1_1k acl1_10k; do
    cache="$LOGS/rules/$set"
    if [[ ! -s $cache/summary || $HERE/classbench_rules.py -nt $cache/summary \
        || $CLASSBENCH/$set -nt $cache/summary ]]; then
        log "converting $set (microseg YAML, nft linear chain, nft verdict maps)"
        rm -rf "$cache"; mkdir -p "$cache"
        python3 "$HERE/classbench_rules.py" "$CLASSBENCH/$set" "$cache" \
            10.203.1.0/24 10.203.2.0/24 "$SPORT_BASE" $((SPORT_BASE + SPORT_SPAN - 1)) \
            "$DPORT_BASE" $((DPORT_BASE + MANY / SPORT_SPAN + 1)) 2>"$cache/summary.tmp" \
            || die "$(cat "$cache/summary.tmp")"
        mv "$cache/summary.tmp" "$cache/summary"
    fi
    cp -r "$cache" "$WORK/$set"
    log "$set: $(cat "$WORK/$set/summary")"
done
mkdir -p "$WORK/0rules"
printf 'default_action: allow\nrules: []\n' >"$WORK/0rules/rules.yaml"

# --- topology ---------------------------------------------------------------
# (Foreground only: a function run with & is a subshell, and $! would be
# its PID, not the program's; background programs use ip netns exec directly,
# which execs, so $! is the program itself.)
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
mac_of() { ip -n "$1" -j link show "$2" | jq -r '.[0].address'; }

# Makes PFXgh's NAPI a kthread on the DUT core (its receive work, and any
# XDP program's, then runs there instead of on the generator's core).
napi_on_dut_core() {
    in_ns "$NS_SW" sh -c "echo 1 > /sys/class/net/$IF_GH/threaded"
    local kt
    kt=$(pgrep -x "napi/$IF_GH-.*" | head -n1 || true)
    [[ -n $kt ]] || kt=$(ps -e -o pid=,comm= | awk -v p="napi/$IF_GH" 'index($2, p) == 1 {print $1; exit}')
    [[ -n $kt ]] || die "no NAPI kthread for $IF_GH"
    taskset -pc "$DUT_CPU" "$kt" >/dev/null
}

topology_up() { # kind: bare | microseg | microseg-fastpath | kernel-*
    local kind=$1
    ip netns add "$NS_GEN"; ip netns add "$NS_SW"; ip netns add "$NS_SINK"
    ip link add "$IF_G" type veth peer name "$IF_GH"
    ip link add "$IF_S" type veth peer name "$IF_SH"
    ip link set "$IF_G" netns "$NS_GEN"; ip link set "$IF_GH" netns "$NS_SW"
    ip link set "$IF_S" netns "$NS_SINK"; ip link set "$IF_SH" netns "$NS_SW"
    local ns
    for ns in "$NS_GEN" "$NS_SW" "$NS_SINK"; do
        in_ns "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
        ip -n "$ns" link set lo up
    done
    if [[ $kind == kernel* ]]; then
        ip -n "$NS_GEN" addr add 10.203.1.1/24 dev "$IF_G"
        ip -n "$NS_SINK" addr add 10.203.2.1/24 dev "$IF_S"
        ip -n "$NS_SW" addr add 10.203.1.254/24 dev "$IF_GH"
        ip -n "$NS_SW" addr add 10.203.2.254/24 dev "$IF_SH"
    else
        # One L2 segment through the switch.
        ip -n "$NS_GEN" addr add 10.203.1.1/16 dev "$IF_G"
        ip -n "$NS_SINK" addr add 10.203.2.1/16 dev "$IF_S"
    fi
    ip -n "$NS_GEN" link set "$IF_G" up; ip -n "$NS_SINK" link set "$IF_S" up
    ip -n "$NS_SW" link set "$IF_GH" up; ip -n "$NS_SW" link set "$IF_SH" up
    in_ns "$NS_SW" ethtool -K "$IF_GH" gro on >/dev/null
    in_ns "$NS_SW" ethtool -K "$IF_SH" gro on >/dev/null
    if [[ $kind == kernel* ]]; then
        in_ns "$NS_SW" sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 \
            net.ipv4.conf.default.rp_filter=0 "net.ipv4.conf.$IF_GH.rp_filter=0"
        ip -n "$NS_SW" neigh replace 10.203.2.1 lladdr "$(mac_of "$NS_SINK" "$IF_S")" \
            dev "$IF_SH" nud permanent
        ip -n "$NS_GEN" route add 10.203.2.0/24 via 10.203.1.254
        ip -n "$NS_SINK" route add 10.203.1.0/24 via 10.203.2.254
        # Forwarding runs in PFXgh's NAPI: make it a kthread on the DUT core.
        napi_on_dut_core
    fi
    [[ $kind != microseg-fastpath ]] || napi_on_dut_core
    # The sink: XDP counter and drop on PFXs.
    rm -f "$TB/sink.log" "$TB/sink.err"
    ip netns exec "$NS_SINK" taskset -c "$GEN_CPU" "$BIN/testbed-xdp" sink --ifname "$IF_S" \
        --interval-ms 200 >"$TB/sink.log" 2>"$TB/sink.err" &
    PIDS+=($!)
    for _ in $(seq 50); do [[ -s $TB/sink.log ]] && break; sleep 0.1; done
    [[ -s $TB/sink.log ]] || die "sink did not start: $(cat "$TB/sink.err")"
    sleep 0.3
    kill -0 "${PIDS[-1]}" 2>/dev/null || die "sink exited: $(cat "$TB/sink.err")"
}

# Reads "seconds udp_frames" of the sink's latest sample.
sink_sample() { tail -n1 "$TB/sink.log" | awk '{print $1, $2}'; }

# --- devices under test ---------------------------------------------------------
start_microseg() { # rules-dir [fast_path: true|false]
    cat >"$TB/config.yaml" <<EOF
ports: [$IF_GH, $IF_SH]
workers: 1
cpus: [$DUT_CPU]
poll_mode: $POLL_MODE
frames_per_port: $FRAMES_PER_PORT
fast_path: ${2:-false}
rules: $1/rules.yaml
conntrack: {max_entries: 2097152, per_source_limit: 2097152}
state_dir: $TB/state
api: {listen: "127.0.0.1:9870", tokens_file: $TB/tokens}
EOF
    mkdir -p "$TB/state"
    echo "viewer bench $TOKEN" >"$TB/tokens"
    chmod 600 "$TB/tokens"
    ip netns exec "$NS_SW" "$BIN/microseg" run -c "$TB/config.yaml" \
        >"$TB/dut.log" 2>&1 &
    DUT_PID=$!
    PIDS+=("$DUT_PID")
    for _ in $(seq 100); do
        status >/dev/null 2>&1 && break
        kill -0 "$DUT_PID" 2>/dev/null || die "microseg exited: $(cat "$TB/dut.log")"
        sleep 0.2
    done
    status >/dev/null || die "microseg API not answering: $(cat "$TB/dut.log")"
    # Whether its tables are on huge pages (1M-flow rates depend on it;
    # docs/performance-notes.md, "Huge pages only on some starts").
    log "  $(grep -m1 '^microseg: memory:' "$TB/dut.log" || echo 'microseg: memory: not reported')"
    # Let the switch learn the sink's MAC (ARP from the sink through the
    # switch; the generator's stack answers).
    in_ns "$NS_SINK" ping -c 1 -W 1 10.203.1.1 >/dev/null 2>&1 || true
}
status() {
    in_ns "$NS_SW" curl -sf --max-time 2 -H "Authorization: Bearer $TOKEN" \
        http://127.0.0.1:9870/v1/status
}
TOKEN=bench-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')

start_bare() {
    rm -f "$TB/stop"
    ip netns exec "$NS_SW" taskset -c "$DUT_CPU" "$BIN/bare-forward" --ports "$IF_GH" "$IF_SH" \
        --mode "$POLL_MODE" --frames "$FRAMES_PER_PORT" --stop-file "$TB/stop" ${BARE_FLAGS:-} >"$TB/dut.log" 2>&1 &
    DUT_PID=$!
    PIDS+=("$DUT_PID")
    for _ in $(seq 50); do grep -q "bare-forward:" "$TB/dut.log" && break; sleep 0.1; done
    kill -0 "$DUT_PID" 2>/dev/null || die "bare-forward exited: $(cat "$TB/dut.log")"
}

start_nft() { # rules-dir linear|vmap
    in_ns "$NS_SW" nft -f "$1/$2.nft"
    if [[ $2 == vmap ]]; then
        local f
        for f in "$1"/vmap-elements-*.nft; do in_ns "$NS_SW" nft -f "$f"; done
    fi
}

# CPU time of a process (utime + stime of all its threads, exited ones
# included), in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

idle_cpu() { # label: measure the DUT's CPU use with no traffic
    local c0 c1 s0 s1 pct hz
    hz=$(getconf CLK_TCK)
    sleep 1
    c0=$(cpu_ticks "$DUT_PID"); s0=$(date +%s%N)
    sleep "$IDLE"
    c1=$(cpu_ticks "$DUT_PID"); s1=$(date +%s%N)
    pct=$(awk -v a="$c0" -v b="$c1" -v x="$s0" -v y="$s1" -v hz="$hz" \
        'BEGIN {printf "%.2f", (b - a) / hz / ((y - x) / 1e9) * 100}')
    log "  idle CPU ($1): $pct% of a core over ${IDLE}s ($((c1 - c0)) ticks of 1/$hz s)"
    echo "$STAMP,$CONFIG,idle-cpu,$RULESET,$1,,,,$IDLE,$(cut -d' ' -f1 /proc/loadavg),$pct," \
        >>"$WORK/idle.csv"
}

# flows the XDP fast path holds now (microseg's status API), 0 if unknown.
fast_path_installed() {
    status 2>/dev/null | python3 -c \
        'import json, sys; print(json.load(sys.stdin).get("fast_path", {}).get("installed", 0))' \
        2>/dev/null || echo 0
}

# settle_fast_path flows dst_mac: the fast path installs flows behind the
# traffic (the offloader, a step at a time; requests it had no room for
# come again with the flow's next frame), so one fill run can leave part
# of a million flows in userspace, and the measured runs would then time
# the installing. Up to SETTLE_RUNS more fill runs (run 0 again) until
# every flow is installed; each is logged with the count.
settle_fast_path() {
    local flows=$1 dmac=$2 more installed
    installed=$(fast_path_installed)
    log "  fast path: $installed of $flows flows installed after the fill run"
    for more in $(seq "$SETTLE_RUNS"); do
        ((installed >= flows)) && return 0
        gen_run "$flows" "$dmac" 0
        installed=$(fast_path_installed)
        log "  fast path: $installed of $flows flows installed after fill run $((more + 1))"
    done
    ((installed >= flows)) || log "  WARNING: the fast path holds $installed of $flows flows; measuring anyway"
}

# --- one run ------------------------------------------------------------------
# gen_run flows dst_mac run# [pair#] : one measured run on the current
# testbed, appends a CSV row (pair: the paired phase's pair, else empty).
gen_run() {
    local flows=$1 dmac=$2 run=$3 pair=${4:-} gmac before after mpps load
    gmac=$(mac_of "$NS_GEN" "$IF_G")
    load=$(cut -d' ' -f1 /proc/loadavg)
    ip netns exec "$NS_GEN" taskset -c "$GEN_CPU" "$BIN/testbed-xdp" gen --ifname "$IF_G" \
        --src-mac "$gmac" --dst-mac "$dmac" --src-ip 10.203.1.1 --dst-ip 10.203.2.1 \
        --flows "$flows" --sport-base "$SPORT_BASE" --sport-span "$SPORT_SPAN" \
        --dport-base "$DPORT_BASE" --len "$FRAME_LEN" --seconds $((WARMUP + DURATION + 1)) \
        >"$TB/gen.log" 2>&1 &
    local gen=$!
    PIDS+=("$gen")
    sleep "$WARMUP"
    before=$(sink_sample)
    sleep "$DURATION"
    after=$(sink_sample)
    wait "$gen" || die "generator failed: $(cat "$TB/gen.log")"
    cat "$TB/gen.log" >>"$LOGS/$CONFIG.log"
    local method
    method=$(sed -n 's/.*Mpps offered), \(live frames\|XDP loop\).*/\1/p' "$TB/gen.log")
    [[ -n $method ]] && GENERATORS[$method]=1
    mpps=$(awk -v b="$before" -v a="$after" 'BEGIN {
        split(b, x, " "); split(a, y, " ");
        printf "%.4f", (y[2] - x[2]) / (y[1] - x[1]) / 1e6 }')
    local offered what
    offered=$(sed -n 's/.*(\([0-9.]*\) Mpps offered).*/\1/p' "$TB/gen.log")
    if ((run == 0)); then what="fill run"; else what="run $run"; fi
    [[ -z $pair ]] || what="$CONFIG, pair $pair"
    log "  $what: $mpps Mpps at the sink (offered $offered Mpps, load $load)"
    if awk -v m="$mpps" 'BEGIN {exit !(m < 0.001)}'; then
        log "  WARNING: nothing reached the sink; see $LOGS/$CONFIG.log"
    fi
    echo "$STAMP,$CONFIG,$KIND,$RULESET,$flows,$run,$mpps,$offered,$DURATION,$load,,$pair" >>"$CSV"
}

# dut_up name kind ruleset: the current slot's topology with its device
# under test running, remembered in the slot (`dut_start`); for microseg
# acl1 10k in adaptive mode, its idle CPU before any traffic.
dut_up() {
    dut_start "$@"
    if [[ $KIND == microseg && $POLL_MODE == adaptive && $RULESET == acl1_10k ]]; then
        idle_cpu before-traffic
    fi
}

# dut_start config kind ruleset: the current slot's topology and its device
# under test, recorded as the slot's (`use_testbed` restores CONFIG, KIND,
# RULESET, DUT_PID and DMAC, where the generator sends, from that record).
dut_start() {
    CONFIG=$1 KIND=$2 RULESET=$3
    : >"$LOGS/$CONFIG.log"
    rm -f "$TB/dut.log"
    topology_up "$KIND"
    DUT_PID=
    case $KIND in
        bare)
            start_bare
            DMAC=$(mac_of "$NS_SINK" "$IF_S") ;;
        microseg)
            start_microseg "$WORK/$RULESET"
            DMAC=$(mac_of "$NS_SINK" "$IF_S") ;;
        microseg-fastpath)
            start_microseg "$WORK/$RULESET" true
            DMAC=$(mac_of "$NS_SINK" "$IF_S") ;;
        kernel-*)
            DMAC=$(mac_of "$NS_SW" "$IF_GH")
            [[ $KIND == kernel-norules ]] || start_nft "$WORK/$RULESET" "${KIND#kernel-nft-}" ;;
    esac
    SLOT_DUT[$SLOT]=$DUT_PID SLOT_CONFIG[$SLOT]=$CONFIG SLOT_KIND[$SLOT]=$KIND
    SLOT_RULESET[$SLOT]=$RULESET SLOT_DMAC[$SLOT]=$DMAC
}

# fill flows: with many flows (and FILL=1), the current slot's fill run
# (run 0: sets up the flows; for the fast path, until they are installed).
fill() {
    [[ $CONFIG == *-many && $FILL == 1 ]] || return 0
    gen_run "$1" "$DMAC" 0
    if [[ $KIND == microseg-fastpath ]]; then settle_fast_path "$1" "$DMAC"; fi
}

# dut_finish: what the current slot's device under test reports after its
# runs (status, idle CPU), and the bare forwarder told to stop.
dut_finish() {
    case $KIND in
        microseg-fastpath) status >"$LOGS/$CONFIG.status.json" || true ;;
        microseg)
            status >"$LOGS/$CONFIG.status.json" || true
            if [[ $POLL_MODE == adaptive && $RULESET == acl1_10k ]]; then idle_cpu after-traffic; fi ;;
        bare) touch "$TB/stop" ;;
        kernel-nft-*)
            in_ns "$NS_SW" sh -c 'cat /proc/sys/net/netfilter/nf_conntrack_count' \
                >"$LOGS/$CONFIG.conntrack_count" 2>/dev/null || true ;;
    esac
}

# dut_logs: the current slot's logs and interface counters into its
# configuration's log (after stop_pids, before topology_down).
dut_logs() {
    {
        cat "$TB/dut.log" "$TB/sink.err" 2>/dev/null || true
        echo "--- sink, last sample: $(tail -n1 "$TB/sink.log")"
        local ifc
        for ifc in "$IF_GH" "$IF_SH"; do
            echo "--- ethtool -S $ifc"; in_ns "$NS_SW" ethtool -S "$ifc" | grep -v ': 0$' || true
        done
        echo "--- ethtool -S $IF_G"; in_ns "$NS_GEN" ethtool -S "$IF_G" | grep -v ': 0$' || true
        echo "--- nstat in $NS_SW"; in_ns "$NS_SW" nstat -as 2>/dev/null | grep -v ' 0 ' || true
    } >>"$LOGS/$CONFIG.log" 2>&1
}

# slots_down slot...: stops every process, keeps each slot's logs and
# removes its topology.
slots_down() {
    local slot
    sleep 0.3
    stop_pids
    for slot in "$@"; do use_testbed "$slot"; dut_logs; topology_down; done
    # Namespaces are dismantled asynchronously: let it finish.
    sleep 1
    use_testbed 0
}

# run_config name kind ruleset flows: one configuration, RUNS runs.
run_config() {
    [[ $1 =~ $ONLY ]] || return 0
    local flows=$4 run
    log "== $1 ($flows flows)"
    use_testbed 0
    dut_up "$1" "$2" "$3"
    fill "$flows"
    for run in $(seq "$RUNS"); do gen_run "$flows" "$DMAC" "$run"; done
    dut_finish
    slots_down 0
}

# run_pair flows name kind ruleset name kind ruleset: two configurations
# measured in alternation, each on its own testbed, both up for the whole
# phase (tables kept): PAIRS pairs of one run each, the first
# configuration first in odd pairs and second in even ones. A pair's two
# runs are seconds apart, so the machine's drift over minutes falls on
# both alike, and their ratio is the same-run comparison; the report
# takes the median of the pairs' ratios (column `pair` of the CSV). With
# PAIRS=0, or when ONLY selects one of them, each is an ordinary
# configuration (run_config).
run_pair() {
    local flows=$1 a=("$2" "$3" "$4") b=("$5" "$6" "$7")
    if ((PAIRS == 0)) || ! [[ ${a[0]} =~ $ONLY && ${b[0]} =~ $ONLY ]]; then
        run_config "${a[@]}" "$flows"
        run_config "${b[@]}" "$flows"
        return 0
    fi
    log "== pairs: ${a[0]} and ${b[0]} in alternation ($flows flows, $PAIRS pairs)"
    use_testbed 0; dut_up "${a[@]}"
    use_testbed 1; dut_up "${b[@]}"
    local slot pair order
    for slot in 0 1; do use_testbed "$slot"; fill "$flows"; done
    for pair in $(seq "$PAIRS"); do
        if ((pair % 2)); then order=(0 1); else order=(1 0); fi
        for slot in "${order[@]}"; do
            use_testbed "$slot"
            gen_run "$flows" "$DMAC" "$pair" "$pair"
        done
    done
    for slot in 0 1; do use_testbed "$slot"; dut_finish; done
    slots_down 0 1
}

# --- latency ------------------------------------------------------------------
# ping_run label load_pps: one ping measurement, appends a latency row.
ping_run() {
    local label=$1 pps=$2 raw="$LOGS/latency-$CONFIG-$1.txt" row
    ip netns exec "$NS_GEN" taskset -c "$GEN_CPU" ping -n -c "$PINGS" -i "$PING_INTERVAL" -W 1 \
        10.203.2.1 >"$raw" 2>&1 || true
    row=$(python3 "$HERE/ping_stats.py" "$PINGS" <"$raw")
    log "  $label: sent,received,median,p99,mean,max (us) = $row"
    [[ ${row#*,} != 0,* ]] || log "  WARNING: no ping reply; see $raw"
    echo "$STAMP,$CONFIG,$pps,$row" >>"$LATENCY_CSV"
}

# latency_config name kind ruleset
latency_config() {
    [[ latency-$1 =~ $ONLY ]] || return 0
    log "== latency $1 ($PINGS pings every ${PING_INTERVAL}s, idle and at $LOAD_PPS pps)"
    use_testbed 0
    dut_start "$1" "$2" "$3"
    # Resolve neighbours (and let the switch learn) before measuring.
    in_ns "$NS_GEN" ping -n -c 3 -i 0.2 -W 1 10.203.2.1 >/dev/null 2>&1 \
        || log "  WARNING: warm-up ping got no reply"
    ping_run idle 0
    local seconds load
    seconds=$(awk -v n="$PINGS" -v i="$PING_INTERVAL" 'BEGIN {printf "%.1f", n * i + 3}')
    ip netns exec "$NS_GEN" taskset -c "$GEN_CPU" "$BIN/testbed-xdp" load --dst 10.203.2.1:5000 \
        --pps "$LOAD_PPS" --seconds "$seconds" >"$TB/load.log" 2>&1 &
    load=$!
    PIDS+=("$load")
    sleep 1
    ping_run load "$LOAD_PPS"
    wait "$load" || die "load sender failed: $(cat "$TB/load.log")"
    log "  $(cat "$TB/load.log")"
    [[ $KIND != bare ]] || touch "$TB/stop"
    slots_down 0
}

# --- main -----------------------------------------------------------------------
STAMP=$(date -u +%Y-%m-%dT%H:%M:%SZ)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
log "prefixes ${PREFIXES[*]}, runs $RUNS x ${DURATION}s (+${WARMUP}s warm-up), $PAIRS pairs, load $LOAD_START"
raise_sysctl net.netfilter.nf_conntrack_max 2097152
raise_sysctl net.netfilter.nf_conntrack_buckets 1048576
echo "date,config,kind,rules,flows,run,mpps,offered_mpps,seconds,load1,idle_cpu_pct,pair" >"$CSV"
: >"$WORK/idle.csv"

for flows_name in few many; do
    if [[ $flows_name == few ]]; then flows=$FEW; else flows=$MANY; fi
    # The 90% target's two sides, in alternation.
    run_pair "$flows" "bare-afxdp-$flows_name" bare - \
        "microseg-acl1_10k-$flows_name" microseg acl1_10k
    run_config "kernel-norules-$flows_name" kernel-norules - "$flows"
    for set in 0rules acl1_1k; do
        run_config "microseg-$set-$flows_name" microseg "$set" "$flows"
    done
    run_config "microseg-fastpath-acl1_10k-$flows_name" microseg-fastpath acl1_10k "$flows"
    for set in acl1_1k acl1_10k; do
        run_config "kernel-nft-linear-$set-$flows_name" kernel-nft-linear "$set" "$flows"
        run_config "kernel-nft-vmap-$set-$flows_name" kernel-nft-vmap "$set" "$flows"
    done
done
cat "$WORK/idle.csv" >>"$CSV"

echo "date,config,load_pps,sent,received,median_us,p99_us,mean_us,max_us" >"$LATENCY_CSV"
if ((PINGS > 0)); then
    latency_config bare-afxdp bare -
    latency_config kernel-norules kernel-norules -
    latency_config microseg-0rules microseg 0rules
    # The same in busy mode: what adaptive mode's sleep costs in wake-ups.
    if [[ $POLL_MODE == adaptive ]]; then
        POLL_MODE=busy latency_config microseg-0rules-busy microseg 0rules
    fi
fi

LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
# How this run's generator made its frames, for testbed.md.
generators() {
    local live=${GENERATORS[live frames]:-} loop=${GENERATORS[XDP loop]:-}
    if [[ -n $live && -n $loop ]]; then echo "XDP live frames and XDP loop"
    elif [[ -n $loop ]]; then echo "XDP loop"
    else echo "XDP live frames"
    fi
}
python3 "$HERE/summarize.py" "$CSV" "$MD" \
    --load-start "$LOAD_START" --load-end "$LOAD_END" --runs "$RUNS" --duration "$DURATION" \
    --warmup "$WARMUP" --poll-mode "$POLL_MODE" --few "$FEW" --many "$MANY" \
    --rules-summary "acl1_1k: $(cat "$WORK/acl1_1k/summary")" \
    --rules-summary "acl1_10k: $(cat "$WORK/acl1_10k/summary")" \
    --generator "$(generators)"
log "wrote $CSV, $MD and $LATENCY_CSV"
