//! heapsite's own threads (the memory-over-time sampler, the SIGTERM
//! watchdog): threads the program never asked for, so they must not change
//! what it sees.
//!
//! - They take no signal sent to the process. A signal sent to the process goes to any one of
//!   its threads that does not block it. Had one of ours taken it, CPython's
//!   handler would note it there while the main thread stayed blocked in
//!   `read()` (`input()`, a socket, `sys.stdin.readline()`), never
//!   interrupted, so the program's handler (and heapsite's dump signal, and
//!   Ctrl-C) would wait until the read returned by itself. Found on 3.15
//!   under load: one `--dump-signal` in three was never acted on. So every
//!   signal is blocked in the thread from its first instruction: blocked in
//!   the spawning thread around the spawn, which the new thread inherits.
//! - Their allocations are heapsite's own, not the program's.

use std::io;
use std::thread::JoinHandle;

/// Starts `body` on a thread named `name` that takes no signals and whose
/// memory is heapsite's own.
pub fn spawn<T: Send + 'static>(
    name: &str,
    body: impl FnOnce() -> T + Send + 'static,
) -> io::Result<JoinHandle<T>> {
    // SAFETY: the sets are locals that sigfillset / pthread_sigmask write
    // before they are read; pthread_sigmask only changes this thread's mask,
    // and the old mask is put back below whatever the spawn returned.
    let previous = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut previous: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        // A fault in the thread itself still reaches its handler (Rust's
        // stack-overflow message, faulthandler): the kernel sends these to
        // the faulting thread alone, never to it for the process.
        for fault in [libc::SIGSEGV, libc::SIGBUS, libc::SIGFPE, libc::SIGILL] {
            libc::sigdelset(&mut all, fault);
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut previous);
        previous
    };
    let spawned = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            crate::engine::own_memory::own_thread();
            body()
        });
    // SAFETY: `previous` is the mask read above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &previous, std::ptr::null_mut()) };
    spawned
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocked(signal: libc::c_int) -> bool {
        // SAFETY: reads this thread's mask into a local.
        unsafe {
            let mut mask: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut mask);
            libc::sigismember(&mask, signal) == 1
        }
    }

    #[test]
    fn the_thread_blocks_every_signal_and_the_spawner_keeps_its_mask() {
        let before = blocked(libc::SIGUSR2);
        let inside = spawn("heapsite-test", || {
            [libc::SIGUSR2, libc::SIGINT, libc::SIGTERM, libc::SIGALRM]
                .into_iter()
                .all(blocked)
        })
        .unwrap()
        .join()
        .unwrap();
        assert!(inside);
        assert_eq!(blocked(libc::SIGUSR2), before);
    }
}
