//! Compiles the testbed benchmark's XDP programs (`testbed/bpf/*.bpf.c`:
//! the generator and the sink) with clang into OUT_DIR; the `testbed-xdp`
//! bin embeds the objects and loads them with libbpf-rs.
//!
//! Headers as in the dataplane's build.rs: libbpf's from libbpf-sys
//! (DEP_BPF_INCLUDE), the kernel UAPI from Debian's linux-libc-dev.

use std::path::PathBuf;
use std::process::Command;

const PROGRAMS: [&str; 2] = ["gen", "sink"];
const DIR: &str = "testbed/bpf";

fn main() {
    println!("cargo:rerun-if-changed={DIR}/testbed.h");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    let libbpf_include =
        std::env::var("DEP_BPF_INCLUDE").expect("libbpf-sys exports DEP_BPF_INCLUDE");
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").expect("target arch");
    for name in PROGRAMS {
        let source = format!("{DIR}/{name}.bpf.c");
        println!("cargo:rerun-if-changed={source}");
        let object = out.join(format!("{name}.bpf.o"));
        let status = Command::new("clang")
            .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
            .arg(format!("-I{libbpf_include}"))
            .arg(format!("-I/usr/include/{arch}-linux-gnu"))
            .arg(format!("-I{DIR}"))
            .arg("-c")
            .arg(&source)
            .arg("-o")
            .arg(&object)
            .status()
            .unwrap_or_else(|e| panic!("running clang for {source}: {e} (scripts/deps.sh)"));
        assert!(status.success(), "clang failed on {source}");
    }
}
