#!/usr/bin/env bash
# The demo: three workloads (web, app, db) in network namespaces behind a
# microseg switch on AF_XDP, a sample policy, real traffic, and what was
# allowed and denied, with the deciding rule; then the testbed, the switch
# and its API stay up until Ctrl-C (`--once`: exit after the summary).
# Needs root (namespaces, XDP). Everything it creates is removed when it
# ends, also on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "microseg demo: run as root (it builds network namespaces and attaches XDP)" >&2
  exit 1
fi
cargo build -q -p microseg-control --bin microseg
exec "${CARGO_TARGET_DIR:-target}/debug/microseg" demo "$@"
