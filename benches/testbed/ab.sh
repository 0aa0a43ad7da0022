#!/usr/bin/env bash
# benches/testbed/ab.sh — an A/B comparison on the throughput testbed:
# two builds (or two settings of one build), measured in alternation so
# that the machine's drift falls on both sides alike.
#
#   sudo bash benches/testbed/ab.sh A_BIN_DIR B_BIN_DIR
#
# A_BIN_DIR, B_BIN_DIR: folders holding each side's release binaries
# (microseg, testbed-xdp, bare-forward), e.g. target/release copied aside
# before a change and target/release after it; the same folder twice to
# compare settings (A_ENV, B_ENV). Nothing is built.
#
# Environment: ONLY (configurations, a regex as for run.sh; default
# '^microseg-acl1_10k-(few|many)$'), REPS (alternations, default 4), RUNS
# and DURATION (each pass of run.sh; default 3 and 8), A_ENV and B_ENV
# (space-separated VAR=VALUE settings given to run.sh on that side, e.g.
# "FRAMES_PER_PORT=256"), AB_OUT (results; default target/testbed-ab,
# emptied first).
#
# Each alternation runs one full pass of run.sh per side over ONLY, A first
# on odd alternations and B first on even ones, each with its results in
# AB_OUT/<alternation>-<a|b>/ (testbed.csv, testbed.md). run.sh takes the
# side's binaries from AB_OUT/target-<a|b>/release (a link to the folder
# given), where its logs and converted rule sets also stay. Then ab.py
# prints, per configuration, each alternation's medians, the pooled
# medians, the median of the paired ratios B/A and in how many
# alternations B was ahead, also written to AB_OUT/ab.md. Latency and
# idle-CPU measurements are skipped (PINGS=0 IDLE=0).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

die() { echo "ab.sh: $*" >&2; exit 2; }
count() { # name value: a whole number of at least 1
    [[ $2 =~ ^[0-9]+$ ]] && (($2 >= 1)) || die "$1 must be a whole number of at least 1, not '$2'"
}

[[ $# == 2 ]] || die "usage: ab.sh A_BIN_DIR B_BIN_DIR (see the comment at the top)"
REPS=${REPS:-4} RUNS=${RUNS:-3} DURATION=${DURATION:-8}
count REPS "$REPS"
count RUNS "$RUNS"
count DURATION "$DURATION"
ONLY=${ONLY:-'^microseg-acl1_10k-(few|many)$'}
AB_OUT=${AB_OUT:-$ROOT/target/testbed-ab}
declare -A BINS=([a]=$1 [b]=$2) SETTINGS=([a]=${A_ENV:-} [b]=${B_ENV:-})
for side in a b; do
    dir=${BINS[$side]}
    for b in microseg testbed-xdp bare-forward; do
        [[ -x $dir/$b ]] || die "side ${side^^}: $dir/$b is missing or not executable"
    done
    BINS[$side]=$(cd "$dir" && pwd)
    for setting in ${SETTINGS[$side]}; do
        [[ $setting =~ ^[A-Z_][A-Z0-9_]*=.*$ ]] \
            || die "${side^^}_ENV: '$setting' is not VAR=VALUE"
    done
done

if [[ -e $AB_OUT ]]; then
    [[ -d $AB_OUT/target-a || -z $(ls -A "$AB_OUT" 2>/dev/null) ]] \
        || die "AB_OUT $AB_OUT exists and is not an earlier ab.sh result: not emptying it"
    rm -rf "$AB_OUT"
fi
mkdir -p "$AB_OUT"
AB_OUT=$(cd "$AB_OUT" && pwd)
for side in a b; do
    mkdir -p "$AB_OUT/target-$side"
    ln -s "${BINS[$side]}" "$AB_OUT/target-$side/release"
done

pass() { # alternation side
    local out="$AB_OUT/$1-$2" settings
    read -ra settings <<<"${SETTINGS[$2]}"
    echo "$(date -u +%H:%M:%S) alternation $1, side ${2^^}" >&2
    env "${settings[@]}" NO_BUILD=1 RUNS="$RUNS" DURATION="$DURATION" PINGS=0 IDLE=0 \
        ONLY="$ONLY" BENCH_OUT="$out" CARGO_TARGET_DIR="$AB_OUT/target-$2" \
        bash "$HERE/run.sh" >"$AB_OUT/$1-$2.log" 2>&1 \
        || die "run.sh failed on side ${2^^}, alternation $1: see $AB_OUT/$1-$2.log"
}

for rep in $(seq "$REPS"); do
    if ((rep % 2)); then order=(a b); else order=(b a); fi
    for side in "${order[@]}"; do pass "$rep" "$side"; done
done
python3 "$HERE/ab.py" "$AB_OUT"
