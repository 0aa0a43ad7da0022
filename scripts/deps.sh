#!/usr/bin/env bash
# Installs, idempotently, every system package that microseg's build, tests,
# demo and benchmarks need, and mounts bpffs if it is absent.
#
# Works on a fresh Debian 12 machine that has only the Rust toolchain, gcc and
# python3. Prints what it installs; installs nothing when all is present.
set -euo pipefail

# Debian package -> why we need it.
PACKAGES=(
  clang            # BPF C programs; libxdp-sys builds libxdp with it
  llvm             # llvm-strip for BPF objects
  libelf-dev       # libbpf
  zlib1g-dev       # libbpf
  m4               # libxdp's build
  libpcap-dev      # libxdp's configure (pcap/dlt.h), via xsk-rs -> libxdp-sys
  pkg-config       # -sys crates find libraries
  make             # the Makefile itself
  iproute2         # ip netns / ip link for the testbeds
  ethtool          # testbeds turn off veth tx checksum offload (see docs)
  nftables         # the kernel-firewall baseline in benchmarks
  iperf3           # throughput traffic in testbeds
  socat            # TCP/UDP traffic in testbeds
  netcat-openbsd   # nc in testbeds
  curl             # API checks in the demo
  iputils-ping     # ping in testbeds
  python3-scapy    # crafted and malformed frames
  netsniff-ng      # trafgen traffic generator
  bpftool          # inspecting loaded BPF programs and maps
  linux-libc-dev   # kernel UAPI headers for BPF C
  libc6-dev-i386   # asm/types.h for clang -target bpf on Debian
  gnuplot-nox      # benchmark figures
  jq               # JSON in scripts
  prometheus       # a real Prometheus scrapes /metrics in a test
  openssl          # a test CA and server certificate for the TLS test
  rsyslog          # a real syslog receiver for the alerts test
  chromium         # a headless browser for the UI test
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "deps.sh: installing: ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    echo "deps.sh: need root to install packages (run as root or with sudo)" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  # Packages with a daemon (prometheus) must not start it: tests start
  # their own, on loopback, and end it. policy-rc.d 101 forbids starting
  # services during the install; ours is removed afterwards.
  guard=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    guard=/usr/sbin/policy-rc.d
    trap 'rm -f "$guard"' EXIT
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [ -n "$guard" ]; then rm -f "$guard"; fi
  echo "deps.sh: installed ${#missing[@]} package(s)"
else
  echo "deps.sh: all ${#PACKAGES[@]} system packages present"
fi

# bpffs: needed to pin maps and for libbpf; mount it if absent (root only).
if [ "$(id -u)" -eq 0 ] && ! mountpoint -q /sys/fs/bpf 2>/dev/null; then
  echo "deps.sh: mounting bpffs at /sys/fs/bpf"
  mkdir -p /sys/fs/bpf
  mount -t bpf bpf /sys/fs/bpf
fi

# Rust components used by `make test`.
for comp in rustfmt clippy; do
  if ! rustup component list --installed 2>/dev/null | grep -q "^$comp"; then
    echo "deps.sh: adding rust component $comp"
    rustup component add "$comp"
  fi
done
