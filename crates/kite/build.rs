//! Lays out the sidecar's code in the order `kite-proxy.order` gives: the
//! functions a sidecar runs first, so they share as few pages as they can
//! and the rest of the binary is never mapped in. Release builds only (the
//! file names the release build's symbols); with rustc's own linker, lld,
//! on x86_64 Linux (the only one it is written for). `bench/order.sh`
//! writes the file again from profiles of the sidecars at work; after a
//! change to the proxy's code it should, as some names change with it
//! (`bench/run.sh` says how many it still finds).
fn main() {
    println!("cargo::rerun-if-changed=kite-proxy.order");
    let profile = std::env::var("PROFILE").unwrap_or_default();
    let target = std::env::var("TARGET").unwrap_or_default();
    relative_relocations_packed(&target);
    if profile != "release" || target != "x86_64-unknown-linux-gnu" {
        return;
    }
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let order = std::path::Path::new(&dir).join("kite-proxy.order");
    if !order.exists() {
        return;
    }
    println!(
        "cargo::rustc-link-arg-bin=kite-proxy=-Wl,--symbol-ordering-file={}",
        order.display()
    );
    // Symbols renamed since the file was written are skipped, not errors.
    println!("cargo::rustc-link-arg-bin=kite-proxy=-Wl,--no-warn-symbol-ordering");
}

/// A position-independent binary carries one relocation record (24 bytes)
/// per pointer the loader must adjust, about 15,000 in the sidecar: 370 KiB
/// the loader reads at start and that stays mapped in every sidecar. Packed
/// (DT_RELR), they take a few KiB; only glibc 2.36 and later loads such a
/// binary, so a build for an older glibc, or one whose version it cannot
/// tell, keeps them unpacked.
fn relative_relocations_packed(target: &str) {
    let host = std::env::var("HOST").unwrap_or_default();
    if target != host || !target.ends_with("-linux-gnu") {
        return;
    }
    let glibc = std::process::Command::new("getconf")
        .arg("GNU_LIBC_VERSION")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|v| {
            let (major, minor) = v.trim().strip_prefix("glibc ")?.split_once('.')?;
            Some((major.parse::<u32>().ok()?, minor.parse::<u32>().ok()?))
        });
    if glibc.is_some_and(|version| version >= (2, 36)) {
        println!("cargo::rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
