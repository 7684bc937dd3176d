//! Lays out the conduit-proxy binary for a small resident set: a sidecar runs in every
//! pod, and what it keeps in memory is mostly the pages of its own code.
//!
//! - The functions a proxy runs go first and together, in the order `functions.order`
//!   lists them (written by `scripts/function-order` from callgrind runs: idle first,
//!   then each kind of traffic). The kernel maps a binary's pages around each page
//!   touched (fault-around, whole folios), so a function that runs pulls its neighbours
//!   into the process's resident set: scattered among the 5.5 MB of code that never
//!   runs, the 2.5 MB that does made nearly all of it resident.
//! - Relative relocations are packed (DT_RELR, glibc 2.36): the dynamic loader reads
//!   them all at start, and the unpacked table was 370 kB of every proxy's memory.
//!
//! A Rust symbol's name ends in a hash of the toolchain, the dependencies' versions and
//! features, and the profile; features unify across the packages of one `cargo build`.
//! So the list fits the release build of this package alone, `cargo build --release -p
//! conduit-proxy`, as the image and the benches build it; another build links the same
//! code with less of it in order (`scripts/function-order --check` says how much).
//!
//! Both are options of LLD, the linker Rust uses for x86_64-unknown-linux-gnu; elsewhere,
//! or when the build chooses its own linker, the binary is laid out as the linker likes.

use std::env;
use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let order = manifest.join("functions.order");
    println!("cargo:rerun-if-changed={}", order.display());
    println!("cargo:rerun-if-env-changed=CARGO_ENCODED_RUSTFLAGS");
    let target = env::var("TARGET").unwrap_or_default();
    let rustflags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if target != "x86_64-unknown-linux-gnu" || rustflags.contains("linker") {
        return;
    }
    for arg in [
        format!("--symbol-ordering-file={}", order.display()),
        // A name of the list this build lacks is left out silently: the list is a
        // layout, not a contract.
        "--no-warn-symbol-ordering".to_owned(),
        "-zpack-relative-relocs".to_owned(),
    ] {
        println!("cargo:rustc-link-arg-bins=-Wl,{arg}");
    }
}
