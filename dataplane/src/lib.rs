//! microseg's enforcement point.
//!
//! The core modules (`packet`, and later `classifier`, `conntrack`,
//! `pipeline`) do no I/O and read no clock: they take frames and `now` as
//! arguments, so they are tested deterministically without root. `unsafe`
//! is denied crate-wide and opened only in the AF_XDP and BPF modules.

pub mod bpf;
pub mod classifier;
pub mod conntrack;
pub mod forward;
pub mod frames;
mod hashing;
pub mod offload;
pub mod packet;
pub mod pipeline;
pub mod sharded;
mod spin;
pub mod stats;
pub mod switch;
pub mod worker;
pub mod xsk;
