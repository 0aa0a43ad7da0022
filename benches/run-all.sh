#!/usr/bin/env bash
# benches/run-all.sh — what `make bench` runs: every benchmark of the project
# and of its peers (nftables, Linux forwarding, a bare AF_XDP forwarder,
# dashmap), in one go, then docs/benchmarks.md and its figures regenerated
# from the results of this run only.
#
#   make bench            # full: ~30 min on the 2-core VM once built
#   make bench QUICK=1    # short runs of the same steps: under 5 min once built
#   make bench-testbed    # STEPS=testbed: step 6 alone (~25 min), published
#                         # over the switch's results only
#
# Steps, each writing raw results into a staging folder (target/bench-run/,
# under CARGO_TARGET_DIR when that is set):
#   1. build everything in release mode (not timed in the QUICK budget);
#   2. machine.json: CPU, cores, kernel, toolchain, commit, date, load;
#   3. classifier-report (compiled tree vs linear reference, nine ClassBench
#      sets and IPv6 variants), conntrack-report (10K/100K/1M, 1 and 2
#      threads), table-compare (dashmap vs the sharded table);
#   4. criterion benches (parser, pipeline; classifier and conntrack too in
#      a full run), summarized into criterion.csv;
#   5. policy compile and swap vs `nft -f` (benches/policy/swap.sh, root);
#   6. switch throughput, latency and idle CPU through veth testbeds vs
#      Linux forwarding and nftables (benches/testbed/run.sh, root).
# Only when every step has succeeded are the results copied into
# docs/bench/ and docs/benchmarks.md rendered (benches/report.py render),
# so a failed or interrupted run leaves the committed results as they were.
#
# STEPS=testbed (`make bench-testbed`) runs step 6 alone, with its own
# testbed-machine.json, and replaces only the switch's results (testbed.csv,
# testbed.md, latency.csv, testbed-machine.json): the page then names that
# run for sections 4 and 5 and the full run for the rest. The switch's
# targets are ratios within one run, so they can be measured again (after
# a change of the switch, or in a quieter hour) without the absolute
# nanoseconds of the other sections, which a slow phase of the shared
# machine moves.
#
# Root only (namespaces, XDP). The testbed script tears down what it
# creates, also on failure or Ctrl-C.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
QUICK=${QUICK:-0}
# Cargo's output folder, as cargo resolves it (CARGO_TARGET_DIR is
# relative to the directory cargo runs in, the repository here).
TARGET=$(cd "$ROOT" && mkdir -p "${CARGO_TARGET_DIR:-target}" && cd "${CARGO_TARGET_DIR:-target}" && pwd)
export CARGO_TARGET_DIR=$TARGET
STAGE="$TARGET/bench-run"
RESULTS="$ROOT/docs/bench"
START=$(date +%s)

log() { printf '%s [%4ds] %s\n' "$(date +%T)" $(($(date +%s) - START)) "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ $QUICK == 0 || $QUICK == 1 ]] || die "QUICK must be 0 or 1, not '$QUICK'"
STEPS=${STEPS:-all}
[[ $STEPS == all || $STEPS == testbed ]] || die "STEPS must be all or testbed, not '$STEPS'"
if [[ $STEPS == testbed && ! -f $RESULTS/machine.json ]]; then
    die "STEPS=testbed publishes over a full run's results, and $RESULTS has none: run make bench first"
fi
[[ $(id -u) == 0 ]] || die "run as root: the testbed and nft benchmarks need namespaces and XDP"
for tool in gnuplot nft ip ethtool jq python3; do
    command -v "$tool" >/dev/null || die "$tool is missing: run scripts/deps.sh (make bench does)"
done

log "building (release)"
# Every `cargo bench` builds the benchmarks package's bins too, with the
# bench profile (thin LTO, unwinding), and links them into target/release/
# over the release builds of the same name: conntrack-report built that way
# measured hot hits at 88-91 ns against 41-42 for the release build. So the
# release bins are linked back (`release_bins`, a no-op build once built)
# after each `cargo bench` (docs/performance-notes.md, "The report
# binaries were the bench profile's").
release_bins() { cargo build --release -q -p microseg-benches --bins; }

# publish FILE...: this run's result files into docs/bench/, and the page
# rendered. The page is first rendered from a scratch copy of docs/bench/
# with the files in place, so that results the report refuses (a malformed
# or missing input) or a figure gnuplot cannot draw leave docs/bench/ and
# the page as they were.
publish() {
    local trial="$STAGE/publish-trial"
    rm -rf "$trial"
    mkdir -p "$trial" "$RESULTS"
    cp -R "$RESULTS"/. "$trial"/
    cp "$@" "$trial"/
    python3 benches/report.py render --data "$trial" --out "$trial/benchmarks.md" \
        --figures "$trial" >/dev/null || die "the report refused this run's results: nothing published"
    cp "$@" "$RESULTS"/
    python3 benches/report.py render --data "$RESULTS" --out "$ROOT/docs/benchmarks.md" \
        --figures "$RESULTS"
}
[[ $STEPS == testbed ]] || cargo bench -q -p microseg-benches --no-run
cargo build --release -q -p microseg-control --bin microseg
release_bins

rm -rf "$STAGE"
mkdir -p "$STAGE"
MEASURE_START=$(date +%s)
log "measuring (QUICK=$QUICK, STEPS=$STEPS) into $STAGE"
python3 benches/report.py machine --quick "$QUICK" --out "$STAGE/testbed-machine.json"

# Step 6 alone, published over the switch's results only.
if [[ $STEPS == testbed ]]; then
    log "switch throughput, latency and idle CPU through veth testbeds"
    NO_BUILD=1 QUICK=$QUICK BENCH_OUT="$STAGE" bash benches/testbed/run.sh
    python3 benches/report.py finish --file "$STAGE/testbed-machine.json"
    log "measured in $(($(date +%s) - MEASURE_START))s; publishing the switch's results into $RESULTS"
    publish "$STAGE/testbed.csv" "$STAGE/latency.csv" "$STAGE/testbed.md" \
        "$STAGE/testbed-machine.json"
    log "wrote docs/benchmarks.md and its figures"
    exit 0
fi
cp "$STAGE/testbed-machine.json" "$STAGE/machine.json"

# The reports sample their lookups in turn for this long per measurement
# (microseg_benches::sampling_seconds).
BENCH_SAMPLING_SECONDS=$([[ $QUICK == 1 ]] && echo 1 || echo 6)
export BENCH_SAMPLING_SECONDS
log "classifier: compiled tree vs linear reference"
"$TARGET/release/classifier-report" --csv "$STAGE/classifier.csv" >"$STAGE/classifier.md"
log "conntrack: hit, miss + insert, sweep"
"$TARGET/release/conntrack-report" --csv "$STAGE/conntrack.csv" >"$STAGE/conntrack.md"
log "conntrack: dashmap vs the sharded table"
"$TARGET/release/table-compare" --csv "$STAGE/table-compare.csv" >"$STAGE/table-compare.md"

if [[ $QUICK == 1 ]]; then
    CRITERION_BENCHES=(parser pipeline)
    CRITERION_ARGS=(--warm-up-time 0.5 --measurement-time 1.5)
else
    CRITERION_BENCHES=(parser pipeline classifier conntrack)
    CRITERION_ARGS=(--warm-up-time 1 --measurement-time 4)
fi
# Criterion's results of this run go to the staging folder (CRITERION_HOME),
# so none from an earlier run, kept in target/criterion, can reach
# criterion.csv.
for bench in "${CRITERION_BENCHES[@]}"; do
    log "criterion: $bench"
    CRITERION_HOME="$STAGE/criterion" cargo bench -q -p microseg-benches --bench "$bench" -- \
        "${CRITERION_ARGS[@]}" >"$STAGE/criterion-$bench.log" 2>&1 \
        || die "cargo bench --bench $bench: see $STAGE/criterion-$bench.log"
done
release_bins
python3 benches/report.py criterion --from "$STAGE/criterion" --out "$STAGE/criterion.csv"

log "policy compile and swap vs nft -f"
RUNS=$([[ $QUICK == 1 ]] && echo 3 || echo 5) BENCH_OUT="$STAGE" bash benches/policy/swap.sh \
    >"$STAGE/policy.log"

log "switch throughput, latency and idle CPU through veth testbeds"
NO_BUILD=1 QUICK=$QUICK BENCH_OUT="$STAGE" bash benches/testbed/run.sh

MEASURED=$(($(date +%s) - MEASURE_START))
log "measured in ${MEASURED}s; publishing into $RESULTS"
python3 benches/report.py finish --file "$STAGE/machine.json"
cp "$STAGE/machine.json" "$STAGE/testbed-machine.json"
publish "$STAGE"/*.csv "$STAGE"/*.json "$STAGE/testbed.md"
log "wrote docs/benchmarks.md and its figures (measurements took ${MEASURED}s)"
