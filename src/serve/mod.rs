//! The pprof endpoint: `/debug/pprof/heap` in Go's convention (a gzipped
//! profile.proto with alloc_objects, alloc_space, inuse_objects and
//! inuse_space), so `go tool pprof URL` and the Parca and Pyroscope
//! scrapers read a Python program as they read a Go one; and, as Go does,
//! `/debug/pprof/allocs`, the same profile showing `alloc_space` first,
//! which is what Parca's and Grafana Alloy's memory scrapes ask for.
//!
//! Two threads of heapsite's own (`native::own_thread`, every signal
//! blocked): the server, which accepts one connection at a time and
//! builds each profile from the counters without the GIL (live.rs), and
//! the resolver, which alone takes the GIL, to name sites the server has
//! not seen yet (names.rs). A client can cost the program nothing: the
//! program never waits on the server, the server waits on no client longer
//! than `http::DEADLINE`, and on the resolver no longer than a second.
//!
//! `start` and `stop` are called with the GIL held (the Python API, and
//! an `atexit` callback that stops the server before the interpreter
//! finalises: see names.rs for why that matters).

pub mod address;
mod http;
pub mod live;
mod names;

use crate::native::own_thread;
use crate::report::pprof::{GO_ALLOCS, GO_HEAP};
use http::Request;
use live::Program;
use names::Names;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long the server waits for a connection before it looks at the
/// stop flag.
const ACCEPT_SLICE: Duration = Duration::from_millis(100);
/// How long `stop` waits for the server thread to notice (it looks every
/// 100 ms, whatever its client does).
const STOP_WAIT: Duration = Duration::from_secs(1);

const HEAP_PATH: &str = "/debug/pprof/heap";
const ALLOCS_PATH: &str = "/debug/pprof/allocs";
/// A profile's content type, as Go's net/http/pprof sends it.
const PROFILE: &str = "application/octet-stream";
const INDEX: &str = "<html><head><title>/debug/pprof/</title></head><body>\n\
    <p>heapsite: the heap profile of this Python program, as Go's pprof serves it.</p>\n\
    <p><a href=\"heap\">heap</a>: what is live, where it was allocated \
    (go tool pprof http://HOST/debug/pprof/heap)</p>\n\
    <p><a href=\"allocs\">allocs</a>: the same, all allocations first</p>\n\
    </body></html>\n";

struct Server {
    address: SocketAddr,
    /// The process that started it: a forked child has none of its threads.
    pid: u32,
    stopping: Arc<AtomicBool>,
    names: Arc<Names>,
    thread: JoinHandle<()>,
}

static SERVER: Mutex<Option<Server>> = Mutex::new(None);

/// The listening socket's descriptor and the connection being answered,
/// -1 for none. A forked child has the descriptors but not the thread
/// behind them: it closes its copies as it starts (`close_in_child`), or
/// it would keep the port open with nobody accepting, so that scrapers
/// hang on its backlog and the parent, restarted, cannot listen there.
static LISTENING: AtomicI32 = AtomicI32::new(-1);
static ANSWERING: AtomicI32 = AtomicI32::new(-1);
static AT_FORK: std::sync::Once = std::sync::Once::new();

/// pthread_atfork's child handler: in the child right after fork, one
/// thread, so only async-signal-safe calls (close).
extern "C" fn close_in_child() {
    for fd in [&LISTENING, &ANSWERING] {
        let fd = fd.swap(-1, Ordering::Relaxed);
        if fd >= 0 {
            // SAFETY: a descriptor of the parent's server, which this child
            // never uses: no Rust owner here will close it again (the
            // owners are the server thread's, which the child has not).
            unsafe { libc::close(fd) };
        }
    }
}

/// Why the endpoint did not start.
pub enum StartError {
    /// The address is not one (a ValueError in Python).
    Address(String),
    /// Listening failed: the port is taken, the address is not this
    /// machine's (an OSError).
    Listen(String),
    /// Already serving, at this address (a RuntimeError).
    Running(SocketAddr),
}

fn server() -> std::sync::MutexGuard<'static, Option<Server>> {
    SERVER.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts serving at `address` (see address.rs); returns the address
/// listened on (port 0 asks for a free one). GIL held.
pub fn start(address: &str, program: Program) -> Result<SocketAddr, StartError> {
    let mut running = server();
    match running.as_ref() {
        Some(server) if server.pid == std::process::id() => {
            return Err(StartError::Running(server.address))
        }
        Some(_) => *running = None, // the parent's, before a fork
        None => {}
    }
    let candidates = address::parse(address).map_err(StartError::Address)?;
    let listen_error =
        |e: std::io::Error| StartError::Listen(format!("cannot listen on {address}: {e}"));
    let listener = TcpListener::bind(&candidates[..]).map_err(listen_error)?;
    let bound = listener.local_addr().map_err(listen_error)?;
    listener.set_nonblocking(true).map_err(listen_error)?;
    // SAFETY: registers a handler that only closes descriptors.
    AT_FORK.call_once(|| unsafe {
        libc::pthread_atfork(None, None, Some(close_in_child));
    });
    LISTENING.store(listener.as_raw_fd(), Ordering::Relaxed);

    let names = Arc::new(Names::default());
    let stopping = Arc::new(AtomicBool::new(false));
    let resolver = names.clone();
    own_thread::spawn("heapsite-names", move || resolver.run_resolver()).map_err(listen_error)?;
    let (names_there, stopping_there) = (names.clone(), stopping.clone());
    let thread = own_thread::spawn("heapsite-http", move || {
        accept_loop(listener, &program, &names_there, &stopping_there)
    });
    let thread = match thread {
        Ok(thread) => thread,
        Err(e) => {
            // SAFETY: GIL held (this fn's contract).
            unsafe { names.close() };
            return Err(listen_error(e));
        }
    };
    *running = Some(Server {
        address: bound,
        pid: std::process::id(),
        stopping,
        names,
        thread,
    });
    Ok(bound)
}

/// Stops serving; false if it was not. Its port is free again when this
/// returns, unless the server is still answering after `STOP_WAIT` (a large
/// profile being built): it closes the port as soon as it is done. GIL
/// held (released while the threads finish).
///
/// # Safety
/// The GIL held, on a thread with a thread state.
pub unsafe fn stop() -> bool {
    // Out of the lock first: it is not held while the GIL is given up.
    let Some(server) = server().take() else {
        return false;
    };
    if server.pid != std::process::id() {
        return true; // a forked child: the threads stayed in the parent
    }
    server.stopping.store(true, Ordering::Release);
    // SAFETY: GIL held (this fn's contract).
    unsafe { server.names.close() };
    // SAFETY: GIL held (this fn's contract); taken back below.
    let saved = unsafe { pyo3_ffi::PyEval_SaveThread() };
    let deadline = Instant::now() + STOP_WAIT;
    while !server.thread.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: `saved` is this thread's state, from PyEval_SaveThread.
    unsafe { pyo3_ffi::PyEval_RestoreThread(saved) };
    true
}

/// The server thread: one connection at a time until `stopping`.
fn accept_loop(listener: TcpListener, program: &Program, names: &Names, stopping: &AtomicBool) {
    while !stopping.load(Ordering::Acquire) {
        if !readable(&listener) {
            continue;
        }
        match listener.accept() {
            Ok((stream, _)) => exchange(stream, program, names, stopping),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            // Out of descriptors, say: wait rather than spin.
            Err(_) => std::thread::sleep(ACCEPT_SLICE),
        }
    }
    LISTENING.store(-1, Ordering::Relaxed); // closed as `listener` drops
}

/// Whether a connection waits, looking for at most `ACCEPT_SLICE`.
fn readable(listener: &TcpListener) -> bool {
    let mut poll = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd, a local, for the duration of the call.
    let ready = unsafe { libc::poll(&mut poll, 1, ACCEPT_SLICE.as_millis() as libc::c_int) };
    ready > 0
}

fn exchange(mut stream: TcpStream, program: &Program, names: &Names, stopping: &AtomicBool) {
    ANSWERING.store(stream.as_raw_fd(), Ordering::Relaxed);
    answer(&mut stream, program, names, stopping);
    ANSWERING.store(-1, Ordering::Relaxed); // closed as `stream` drops
}

fn answer(stream: &mut TcpStream, program: &Program, names: &Names, stopping: &AtomicBool) {
    if stream.set_nonblocking(false).is_err() {
        return;
    }
    let (status, content_type, body) = match http::read_request(stream, stopping) {
        None => return,
        Some(Request::Refused(status)) => (status, "text/plain", Vec::new()),
        Some(Request::Get(path)) => match path.as_str() {
            HEAP_PATH => (200, PROFILE, live::heap_profile(program, names, &GO_HEAP)),
            ALLOCS_PATH => (200, PROFILE, live::heap_profile(program, names, &GO_ALLOCS)),
            "/debug/pprof/" | "/debug/pprof" => (200, "text/html; charset=utf-8", INDEX.into()),
            _ => (404, "text/plain", b"404 page not found\n".to_vec()),
        },
    };
    http::respond(stream, status, content_type, &body, stopping);
}
