# microseg — the two commands a fresh machine needs are `make demo` and
# `make test`; both install what they need first (scripts/deps.sh).

CARGO ?= cargo
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := packet_parse classifier_diff

.PHONY: all deps build test fmt-check clippy unit-tests demo fuzz bench bench-testbed bench-policy clean

all: build

deps:
	bash scripts/deps.sh

build: deps
	$(CARGO) build --workspace --release

fmt-check:
	$(CARGO) fmt --all --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Every test of the workspace, closing with one line that totals them.
unit-tests:
	bash scripts/cargo-test-summary.sh --workspace

# Everything CI runs: deps, formatting, lints, every test of the workspace
# (root-only testbed tests included; they fail loudly under CI=true when they
# cannot run).
test: deps fmt-check clippy unit-tests

demo: deps
	bash scripts/demo.sh $(ARGS)

# Each fuzz target for FUZZ_SECONDS, seeded from fuzz/seeds/. cargo-fuzz
# needs nightly compiler flags; RUSTC_BOOTSTRAP lets the stable toolchain
# (the only one here) accept them.
fuzz: deps
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p fuzz/corpus/$$t; \
	  echo "fuzz: $$t for $(FUZZ_SECONDS)s"; \
	  (cd fuzz && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run $$t corpus/$$t seeds/$$t -- \
	     -max_total_time=$(FUZZ_SECONDS)) || exit 1; \
	done

# Switch throughput, idle CPU and latency through veth testbeds vs nftables,
# Linux forwarding and a bare AF_XDP forwarder (root, ~25 min; QUICK=1 for
# a short run), alone: published over the switch's results of the last
# `make bench`, whose page then names both runs. Part of `make bench`.
bench-testbed: deps
	STEPS=testbed QUICK=$(QUICK) bash benches/run-all.sh

# Policy compile time and swap latency vs `nft -f` (root). Part of `make bench`.
bench-policy: deps
	bash benches/policy/swap.sh

# Every benchmark of the project and its peers in one go, then
# docs/benchmarks.md and its figures regenerated from this run's results
# (root; ~30 min once built; QUICK=1: the same steps, short, under 5 min once built).
# See the header of benches/run-all.sh.
QUICK ?= 0
bench: deps
	STEPS=all QUICK=$(QUICK) bash benches/run-all.sh

clean:
	$(CARGO) clean
