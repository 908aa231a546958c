//! Returning freed memory to the system while the process is idle. Both
//! binaries include this file (the library forbids unsafe code); each call
//! into mimalloc is FFI.

/// Sets mimalloc's purge delay: memory free for `ms` milliseconds (times
/// `arena_purge_mult`, 1 in mimalloc 3) goes back to the system.
#[allow(unsafe_code)]
pub(crate) fn set_purge_delay(ms: std::ffi::c_long) {
    // `mi_option_purge_delay`, which the bindings do not name; mimalloc
    // keeps option numbers stable across versions.
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // SAFETY: sets an integer option; mimalloc reads options atomically,
    // and no pointer is involved.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, ms) };
}

/// Has a thread of its own ask mimalloc, once a second, to purge what has
/// been free for its purge delay. mimalloc purges only when the program
/// calls into it, so a process that went idle after a burst kept the
/// burst's memory for as long as it stayed idle: a sidecar after 64 KiB
/// bodies held 13 MiB of which a MiB or two was in use.
#[allow(unsafe_code)]
pub(crate) fn purge_every_second() {
    let purger = std::thread::Builder::new()
        .name("memory-purge".into())
        .spawn(|| {
            // mimalloc collects through the calling thread's heap, which
            // exists once the thread has allocated.
            let _heap = std::hint::black_box(Box::new(0u64));
            loop {
                std::thread::sleep(std::time::Duration::from_secs(1));
                // SAFETY: no pointer is involved; purging the arenas is
                // program-wide and mimalloc serialises it.
                unsafe { libmimalloc_sys::mi_collect(false) };
            }
        });
    if let Err(error) = purger {
        tracing::warn!(%error, "memory purge thread not started; freed memory returns later");
    }
}
