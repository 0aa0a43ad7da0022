#!/usr/bin/env bash
# Policy swap latency, microseg vs nftables, on the same ClassBench-derived
# rules (acl1 1k / 10k / 100k, TCP and UDP filters as CIDR rules):
#
# - microseg: `policy-report` times PolicyEngine::apply, from an accepted
#   change to the new snapshot in force (validate, compile, fsync to the
#   state directory, atomic publish), each a median of samples spread over
#   BENCH_SAMPLING_SECONDS (default 6), at least RUNS of them;
# - nftables: `nft -f` of the same filters as a linear chain, loaded into a
#   network namespace this script creates (so the host's ruleset is never
#   touched), median of RUNS loads, each replacing the previous table.
#
# Writes policy.csv (microseg) and policy-nft.csv into BENCH_OUT (default
# target/bench-policy; `make bench` publishes its own run's into docs/bench
# with the run's commit and time). RUNS (default 5) loads per case. Needs root for the namespace.
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${RUNS:-5}
out=${BENCH_OUT:-${CARGO_TARGET_DIR:-target}/bench-policy}
mkdir -p "$out"
work=$(mktemp -d /tmp/microseg-policy-bench.XXXXXX)
ns="msbench-policy-$$"
cleanup() {
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

cargo build -q --release -p microseg-benches --bin policy-report
"${CARGO_TARGET_DIR:-target}/release/policy-report" --runs "$runs" --csv "$out/policy.csv" --nft "$work"

ip netns add "$ns"
echo "set,rules,median_ms" >"$out/policy-nft.csv"
for file in "$work"/*.nft; do
  set_name=$(basename "$file" .nft)
  rules=$(grep -c ' accept$' "$file")
  times=()
  for _ in $(seq "$runs"); do
    ip netns exec "$ns" nft delete table inet microseg_bench 2>/dev/null || true
    start=$(date +%s%N)
    ip netns exec "$ns" nft -f "$file"
    end=$(date +%s%N)
    times+=($(((end - start) / 1000)))
  done
  median_us=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  median_ms=$(awk -v us="$median_us" 'BEGIN { printf "%.1f", us / 1000 }')
  echo "nft -f $set_name: $rules rules, $median_ms ms median of $runs"
  echo "$set_name,$rules,$median_ms" >>"$out/policy-nft.csv"
done
