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
//!
//! Forked children. A child inherits the dispositions but not the watchdog
//! thread, and a Python handler is not a drop-in for the default action: a
//! SIGTERM that arrives after the main thread last checked for signals and
//! before it blocks (`sem_wait` in a multiprocessing lock, a C call that
//! restarts on EINTR) is noted and never acted upon, so the process lives on.
//! multiprocessing's `Pool.terminate()` ends its workers so, blocked on the
//! task queue's lock that the pool has taken for good: a worker that missed
//! its SIGTERM was waited for forever (1 run in 20-40). So:
//! - a child that writes no capture of its own (no `--follow-fork`) gets
//!   the default action back at once, in a `pthread_atfork` child handler
//!   (before any of the child's Python code, CPython's own after-fork work
//!   included): SIGTERM ends it as it ends the program without heapsite;
//! - a child that does write one keeps the handler and arms a deadline of
//!   its own (`after_fork_in_child`, from Python's at-fork hook), so a
//!   missed SIGTERM still ends it within the grace period.
//!
//! A SIGTERM that reaches a child before either is done runs `in_front`
//! there while `OWNER` is still the parent: it is remembered (`STRAY`) and
//! acted upon when the child's handling is set (the child ends at once, or
//! its deadline starts at once).

use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::Once;
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
/// Forked children keep heapsite's handler (they write a capture of their
/// own) and arm their own deadline; otherwise they get the default action.
static IN_CHILDREN: AtomicBool = AtomicBool::new(false);
/// The grace period, for a child arming its own deadline.
static GRACE_MS: AtomicU64 = AtomicU64::new(0);
/// The process in which `in_front` last ran without being the owner: a
/// forked child signalled before its own SIGTERM handling was set.
static STRAY: AtomicI32 = AtomicI32::new(0);
static FORK_HANDLER: Once = Once::new();

type InfoHandler = extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void);
type PlainHandler = extern "C" fn(c_int);

/// Runs in signal context: async-signal-safe calls only.
extern "C" fn in_front(signal: c_int, info: *mut libc::siginfo_t, context: *mut c_void) {
    // SAFETY: getpid, write and errno's location are async-signal-safe; the
    // handler called is the one the kernel would have called, with its own
    // calling convention (SA_SIGINFO or not).
    unsafe {
        let errno = *libc::__errno_location();
        let me = libc::getpid();
        // OWNER before WAKE (arm and after_fork_in_child store WAKE
        // first): an owner seen here comes with its own pipe.
        if me == OWNER.load(Acquire) {
            wake(WAKE.load(Acquire));
        } else {
            STRAY.store(me, Release);
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

/// Wakes the watchdog reading the other end of `fd`. Async-signal-safe.
fn wake(fd: c_int) {
    let byte = 1u8;
    // SAFETY: write is async-signal-safe and reads one byte of a local.
    unsafe { libc::write(fd, (&raw const byte).cast(), 1) };
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

fn ours_stands() -> bool {
    // SAFETY: sigaction only writes the disposition into the local.
    unsafe {
        let mut current: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGTERM, std::ptr::null(), &mut current) == 0
            && current.sa_sigaction == in_front as *const () as usize
    }
}

/// Starts a watchdog thread reading `wake`'s other end.
fn spawn_watchdog(wake: c_int, grace: Duration) -> std::io::Result<()> {
    super::own_thread::spawn("heapsite-sigterm", move || watch(wake, grace)).map(drop)
}

/// A pipe for the watchdog: (read end, write end).
fn pipe() -> std::io::Result<(c_int, c_int)> {
    let mut pipe = [-1; 2];
    // SAFETY: pipe2 writes two descriptors into the local array.
    if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((pipe[0], pipe[1]))
}

/// pthread_atfork's child handler: runs in the child right after fork, in
/// the forking thread (the child's only one), before CPython's own after-fork
/// work and any Python code. Async-signal-safe calls only.
extern "C" fn child_after_fork() {
    // The parent's handler may have been running when another thread forked:
    // this process has not started its own.
    HANDLING.store(false, Relaxed);
    if IN_CHILDREN.load(Relaxed) || !ours_stands() {
        return; // its own deadline comes from after_fork_in_child; or not ours
    }
    // SAFETY: sigaction, getpid and raise are async-signal-safe; the default
    // disposition is what SIGTERM has in the program without heapsite.
    unsafe {
        let mut default: libc::sigaction = std::mem::zeroed();
        default.sa_sigaction = libc::SIG_DFL;
        libc::sigemptyset(&mut default.sa_mask);
        libc::sigaction(libc::SIGTERM, &default, std::ptr::null_mut());
        // Signalled between fork and here: Python's handler only noted it
        // (and CPython's after-fork work would forget even that). From now
        // on SIGTERM ends the child by itself; this one does so too.
        if STRAY.load(Acquire) == libc::getpid() {
            libc::raise(libc::SIGTERM);
        }
    }
}

/// In a forked child that keeps heapsite's handler (`in_children`): a
/// deadline of its own, as `arm` gave the parent. Nothing to do where the
/// handler is not ours any more, or where this process armed it itself.
pub fn after_fork_in_child() -> std::io::Result<()> {
    // SAFETY: getpid cannot fail.
    let me = unsafe { libc::getpid() };
    let owner = OWNER.load(Acquire);
    if owner == 0 || owner == me || !ours_stands() {
        return Ok(());
    }
    let (read, write) = pipe()?;
    spawn_watchdog(read, Duration::from_millis(GRACE_MS.load(Relaxed)))?;
    WAKE.store(write, Release);
    OWNER.store(me, Release);
    // Signalled since the fork, before OWNER was this process: in_front
    // woke no one (or the parent's watchdog's pipe is not ours to write).
    if STRAY.load(Acquire) == me {
        wake(write);
    }
    Ok(())
}

/// Puts ours in front of the SIGTERM handler Python has just installed.
/// `in_children`: forked children keep it (they write their own capture)
/// with a deadline of their own; otherwise they get the default action.
pub fn arm(grace: Duration, in_children: bool) -> std::io::Result<()> {
    let mut current: libc::sigaction;
    // SAFETY: sigaction writes only into the local.
    unsafe {
        current = std::mem::zeroed();
        if libc::sigaction(libc::SIGTERM, std::ptr::null(), &mut current) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    let handler = current.sa_sigaction;
    let ours_address = in_front as *const () as usize;
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN || handler == ours_address {
        return Ok(()); // no Python handler to stand in front of, or armed already
    }
    let (read, write) = pipe()?;
    PYTHONS_HANDLER.store(handler, Relaxed);
    PYTHONS_TAKES_INFO.store(current.sa_flags & libc::SA_SIGINFO != 0, Relaxed);
    IN_CHILDREN.store(in_children, Relaxed);
    GRACE_MS.store(grace.as_millis().max(1) as u64, Relaxed);
    WAKE.store(write, Release);
    // SAFETY: getpid cannot fail.
    OWNER.store(unsafe { libc::getpid() }, Release);
    spawn_watchdog(read, grace)?;
    // Before ours stands, so that no fork sees ours without the handler
    // that takes it out of the child. Registered once per process image
    // (a child inherits the registration with the rest of its memory).
    FORK_HANDLER.call_once(|| {
        // SAFETY: a plain function pointer with static lifetime.
        unsafe { libc::pthread_atfork(None, None, Some(child_after_fork)) };
    });
    let mut ours = current;
    ours.sa_sigaction = ours_address;
    ours.sa_flags |= libc::SA_SIGINFO;
    // SAFETY: installs in_front, which calls on to the handler just saved.
    if unsafe { libc::sigaction(libc::SIGTERM, &ours, std::ptr::null_mut()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Python's handler has started: the watchdog stands down.
pub fn handling() {
    HANDLING.store(true, Relaxed);
}
