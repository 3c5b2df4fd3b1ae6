//! A deadline on heapsite's SIGTERM handler.
//!
//! Preloaded, heapsite installs a Python handler for SIGTERM (unless the
//! program has its own) that writes the capture and then lets the signal end
//! the process (`heapsite._preload`). A Python handler runs only between
//! bytecodes, so a program busy in one long C call that never checks for
//! signals (`sum(range(10**13))`) would no longer be ended by SIGTERM, as it
//! is without heapsite. So a signal handler of ours stands in front of
//! Python's: it wakes a watchdog thread and passes the signal on; if Python's
//! handler has not started within the grace period, the watchdog ends the
//! process by SIGTERM as the default action would (without a capture).
//!
//! When the program later sets its own SIGTERM disposition, Python replaces
//! the handler, ours included: the program's choice stands, with no deadline.

use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Python's handler, which ours passes the signal on to.
static PYTHONS_HANDLER: AtomicUsize = AtomicUsize::new(0);
static PYTHONS_TAKES_INFO: AtomicBool = AtomicBool::new(false);
/// The process that armed the deadline (a forked child inherits the handler
/// but not the watchdog thread).
static OWNER: AtomicI32 = AtomicI32::new(0);
/// Where ours wakes the watchdog.
static WAKE: AtomicI32 = AtomicI32::new(-1);
/// Python's handler has started: no deadline any more.
static HANDLING: AtomicBool = AtomicBool::new(false);

type InfoHandler = extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void);
type PlainHandler = extern "C" fn(c_int);

/// Runs in signal context: async-signal-safe calls only.
extern "C" fn in_front(signal: c_int, info: *mut libc::siginfo_t, context: *mut c_void) {
    // SAFETY: getpid, write and errno's location are async-signal-safe; the
    // handler called is the one the kernel would have called, with its own
    // calling convention (SA_SIGINFO or not).
    unsafe {
        let errno = *libc::__errno_location();
        if libc::getpid() == OWNER.load(Relaxed) {
            let byte = 1u8;
            libc::write(WAKE.load(Relaxed), (&raw const byte).cast(), 1);
        }
        *libc::__errno_location() = errno;
        let python = PYTHONS_HANDLER.load(Relaxed);
        if PYTHONS_TAKES_INFO.load(Relaxed) {
            std::mem::transmute::<usize, InfoHandler>(python)(signal, info, context);
        } else {
            std::mem::transmute::<usize, PlainHandler>(python)(signal);
        }
    }
}

/// Waits for the signal, then for Python's handler to start, at most `grace`.
fn watch(wake: c_int, grace: Duration) {
    let mut byte = 0u8;
    // SAFETY: reads one byte into a local.
    while unsafe { libc::read(wake, (&raw mut byte).cast(), 1) } != 1 {
        if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return;
        }
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if HANDLING.load(Relaxed) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    if HANDLING.load(Relaxed) {
        return;
    }
    // SAFETY: the default disposition, then the signal to this process.
    unsafe {
        libc::signal(libc::SIGTERM, libc::SIG_DFL);
        libc::kill(libc::getpid(), libc::SIGTERM);
    }
}

/// Puts ours in front of the SIGTERM handler Python has just installed.
pub fn arm(grace: Duration) -> std::io::Result<()> {
    // SAFETY: sigaction and pipe2 write only into the locals given.
    unsafe {
        let mut current: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGTERM, std::ptr::null(), &mut current) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let handler = current.sa_sigaction;
        let ours_address = in_front as *const () as usize;
        if handler == libc::SIG_DFL || handler == libc::SIG_IGN || handler == ours_address {
            return Ok(()); // no Python handler to stand in front of, or armed already
        }
        let mut pipe = [-1; 2];
        if libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        PYTHONS_HANDLER.store(handler, Relaxed);
        PYTHONS_TAKES_INFO.store(current.sa_flags & libc::SA_SIGINFO != 0, Relaxed);
        OWNER.store(libc::getpid(), Relaxed);
        WAKE.store(pipe[1], Relaxed);
        let wake = pipe[0];
        std::thread::Builder::new()
            .name("heapsite-sigterm".into())
            .spawn(move || {
                crate::engine::own_memory::own_thread(); // its allocations are not the program's
                watch(wake, grace)
            })?;
        let mut ours = current;
        ours.sa_sigaction = ours_address;
        ours.sa_flags |= libc::SA_SIGINFO;
        if libc::sigaction(libc::SIGTERM, &ours, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Python's handler has started: the watchdog stands down.
pub fn handling() {
    HANDLING.store(true, Relaxed);
}
