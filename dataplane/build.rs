//! Compiles the XDP program in `../bpf` with clang and generates its
//! libbpf-rs skeleton into OUT_DIR (included by `src/bpf`).
//!
//! Headers: libbpf's (`bpf/bpf_helpers.h`) come from libbpf-sys, which
//! builds libbpf and exports its include directory as DEP_BPF_INCLUDE; the
//! kernel UAPI headers from Debian's linux-libc-dev, whose `asm/` lives in
//! the multiarch directory clang does not search for `-target bpf`.

use std::path::PathBuf;

use anyhow::Context;
use libbpf_cargo::SkeletonBuilder;

const PROGRAM: &str = "../bpf/microseg_xdp.bpf.c";
const HEADER: &str = "../bpf/microseg_xdp.h";

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-changed={PROGRAM}");
    println!("cargo:rerun-if-changed={HEADER}");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").context("OUT_DIR is set by cargo")?);
    let libbpf_include =
        std::env::var("DEP_BPF_INCLUDE").context("libbpf-sys exports DEP_BPF_INCLUDE")?;
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").context("target arch")?;
    let multiarch = format!("/usr/include/{arch}-linux-gnu");
    // libbpf's name of the target architecture (bpf_tracing.h's), for
    // code that depends on the CPU's memory ordering.
    let bpf_arch = match arch.as_str() {
        "x86_64" => "x86",
        "aarch64" => "arm64",
        other => other,
    };
    SkeletonBuilder::new()
        .source(PROGRAM)
        .clang_args([
            format!("-I{libbpf_include}"),
            format!("-I{multiarch}"),
            "-I../bpf".to_string(),
            format!("-D__TARGET_ARCH_{bpf_arch}"),
            // v3: fetching atomics (the fast path's flow counts; fast4's sequence
            // count off x86) and ALU32.
            "-mcpu=v3".to_string(),
            "-Wall".to_string(),
            "-Werror".to_string(),
        ])
        .build_and_generate(out.join("microseg_xdp.skel.rs"))
        .with_context(|| format!("building {PROGRAM}: is clang installed (scripts/deps.sh)?"))?;
    Ok(())
}
