//! Code objects named by call sites, and what happens when one is freed.
//!
//! A site names its frames by code object and offset, resolved to file and
//! line only when a report asks. heapsite does not hold references to those
//! code objects (that kept alive everything a program compiles and drops,
//! see src/engine/codes.c); it asks CPython to tell it when one dies instead, and
//! then *retires* the dying frames: resolves them for good, in place in the
//! frame table, for every site that names them (`sites::retire_site`,
//! `sites::retire_frames`). A retired site can no
//! longer match a running stack, so a new code object at the same address
//! starts a new site.
//!
//! Invariant this gives the rest of heapsite: a site's frames that are not
//! retired (or native) name living code objects. Whoever resolves them must
//! do so without letting Python run in between (`frames::resolve_all`).

use crate::engine::frames::RawFrame;
use crate::engine::sites::{self, SiteId};
use crate::engine::sync::GilCell;
use std::collections::{HashMap, HashSet};
use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicBool, Ordering};

extern "C" {
    fn hs_codes_init(died: unsafe extern "C" fn(*mut c_void)) -> c_int;
    fn hs_codes_watch(code: *mut c_void) -> c_int;
    fn hs_codes_finalizing() -> c_int;
    fn hs_lines_forget(code: *mut c_void);
}

/// Set once code objects died during finalisation without being retired:
/// sites may then name freed code objects (see `frames::resolve`).
pub static ABANDONED: AtomicBool = AtomicBool::new(false);

/// For each watched code object, the sites that name it (see `Users`).
static USERS: GilCell<Option<HashMap<usize, Users>>> = GilCell::new(None);

/// The sites a watched code object's death retires.
enum Users {
    /// Each site that named it when made, with its generation then
    /// (`Site::generation`): an entry whose site has moved on since (its
    /// id given back, maybe reused) is stale.
    Listed(Vec<User>),
    /// Too many to list (`crowded_at`): its death looks at every site.
    /// A long-lived function under most of a program's stacks (importlib's,
    /// a benchmark runner's, a recursive generator's) is in the stack of
    /// nearly every site; listing each site under each of its code objects
    /// was 2.7 of the 9.8 MB heapsite held after pyperf's imports at 16
    /// frames (CPython 3.11), more than the sites themselves.
    Crowded,
}

/// The listed sites at which a code object is crowded instead: at least
/// 512, and an eighth of all sites, so that the pass over every site its
/// death costs is paid for by the sites made under it (a pass is 8 site
/// reads for each of them at most, where making one takes thousands of
/// instructions). Asked only when a list is full.
fn crowded_at() -> usize {
    const FEWEST: usize = 512;
    FEWEST.max(sites::count() as usize / 8)
}

/// A site that named a code object when it was made, and its generation then.
#[derive(Clone, Copy)]
struct User {
    site: SiteId,
    generation: u32,
}

impl User {
    /// Whether the site is still the one that named the code object: a
    /// site's frames change only when a code object of its dies, which
    /// retires that one's frames and never another's, and when its id is
    /// given back, which ends its generation.
    fn current(self) -> bool {
        sites::site(self.site).generation() == self.generation
    }
}
/// Code objects of new sites, pinned until `flush` watches them.
static PENDING: GilCell<Vec<(SiteId, usize)>> = GilCell::new(Vec::new());
/// Whether a pending call to `flush` is queued with the interpreter.
static SCHEDULED: AtomicBool = AtomicBool::new(false);
/// Code objects freed since the report caches last dropped what they hold
/// for them (`take_died`).
static DIED: GilCell<Died> = GilCell::new(Died::None);

/// Code objects freed since the report caches were last told.
pub enum Died {
    None,
    These(HashSet<usize>),
    /// More than `DIED_KEPT` (a program that execs and drops code all day),
    /// or no memory to note one: the caches drop everything.
    Many,
}

/// Freed code objects noted one by one before `Died::Many`.
const DIED_KEPT: usize = 4096;

impl Died {
    fn note(&mut self, code: usize) {
        if let Died::None = self {
            *self = Died::These(HashSet::new());
        }
        if let Died::These(set) = self {
            if set.len() >= DIED_KEPT || set.try_reserve(1).is_err() {
                *self = Died::Many;
            } else {
                set.insert(code);
            }
        }
    }

    /// Whether a cache entry for `code` must go.
    pub fn includes(&self, code: usize) -> bool {
        match self {
            Died::None => false,
            Died::These(set) => set.contains(&code),
            Died::Many => true,
        }
    }

    pub fn is_empty(&self) -> bool {
        matches!(self, Died::None)
    }
}

/// Registers the free function. GIL held; once, at module init.
pub fn init() {
    // SAFETY: GIL held by the import system; `code_died` matches `freefunc`.
    unsafe { hs_codes_init(code_died) };
}

/// Makes room to watch `frames` more code objects; false out of memory
/// (then no site is made, so none names a code object heapsite cannot
/// watch).
///
/// # Safety
/// GIL held.
pub unsafe fn reserve_watch(frames: usize) -> bool {
    // SAFETY: the caller keeps this fn's contract (`# Safety` above):
    // GIL held.
    unsafe { PENDING.get().try_reserve(frames).is_ok() }
}

/// Pins the code objects of a new site's Python frames, to be watched
/// instead by `flush`, which the interpreter runs soon as a pending call.
///
/// Why not watch them here: a new site is made inside an allocator hook,
/// maybe the native malloc one, called with another allocator's lock held
/// (tracemalloc's, with `-X tracemalloc`). Watching a code object allocates
/// its extra array through the Python allocators, which would take that lock
/// again. Pinning allocates nothing, and neither does queueing the call.
///
/// # Safety
/// GIL held; the frames were just read from the running stack, so their code
/// objects are alive; `reserve_watch` made room for them.
pub unsafe fn watch(site: SiteId, frames: &[RawFrame]) {
    // SAFETY: the caller keeps this fn's contract (`# Safety` above):
    // GIL held; the frames were just read from the running stack, so their code objects are alive;
    // `reserve_watch` made room for them.
    unsafe {
        let pending = PENDING.get();
        for (i, frame) in frames.iter().enumerate() {
            if frame.is_python() && !frames[..i].iter().any(|f| f.code == frame.code) {
                pyo3_ffi::Py_IncRef(frame.code.cast());
                pending.push((site, frame.code as usize));
            }
        }
        if !SCHEDULED.swap(true, Ordering::AcqRel)
            && pyo3_ffi::Py_AddPendingCall(Some(pending_call), std::ptr::null_mut()) != 0
        {
            SCHEDULED.store(false, Ordering::Release);
        }
    }
}

extern "C" fn pending_call(_: *mut c_void) -> c_int {
    // SAFETY: the interpreter runs pending calls with the GIL held, outside
    // any allocator hook.
    unsafe { flush() };
    0
}

/// Watches the code objects pinned since the last flush and drops the pins;
/// one that cannot be watched (no extra slot left) stays pinned. Dropping a
/// pin may free a code object at once, which then retires its frames.
///
/// The engine's façade (`engine::settled`) calls it before any read of
/// sites or memory figures, so that code objects the program has dropped
/// are gone before they are measured, whether or not the pending call has
/// run yet. It also lets sites of
/// freed code give their ids back (src/engine/reuse.rs).
///
/// # Safety
/// GIL held, outside any allocator hook (API calls, pending calls), with
/// no site's frames borrowed.
pub(super) unsafe fn flush() {
    // SAFETY: the caller keeps this fn's contract (`# Safety` above):
    // GIL held, outside any allocator hook (API calls, pending calls), with no site's frames
    // borrowed.
    unsafe {
        crate::engine::reuse::sweep();
        SCHEDULED.store(false, Ordering::Release);
        let mut pending = std::mem::take(PENDING.get());
        if pending.is_empty() {
            return;
        }
        // Untraced: the extra arrays allocated here are not the program's.
        sites::untraced(|| {
            let users = USERS.get().get_or_insert_with(HashMap::new);
            pending.retain(|&(site, code)| watch_now(users, site, code));
        });
        // After the guard: a code object freed here reaches `code_died`.
        for (_, code) in pending {
            pyo3_ffi::Py_DecRef(code as *mut pyo3_ffi::PyObject);
        }
    }
}

/// Watches `code` for `site`; false if it cannot be (no extra slot, or no
/// memory to note the site), and then it stays pinned: a site must never
/// name a code object that could die unseen.
///
/// # Safety
/// GIL held; `code` pinned.
unsafe fn watch_now(users: &mut HashMap<usize, Users>, site: SiteId, code: usize) -> bool {
    // SAFETY: the caller keeps this fn's contract (`# Safety` above):
    // GIL held; `code` pinned.
    unsafe {
        if users.try_reserve(1).is_err() {
            return false;
        }
        let entry = users
            .entry(code)
            .or_insert_with(|| Users::Listed(Vec::new()));
        if let Users::Listed(sites) = entry {
            if sites.len() == sites.capacity() {
                forget_stale_users(sites);
                if sites.len() >= crowded_at() {
                    *entry = Users::Crowded;
                }
            }
        }
        let room = match entry {
            Users::Listed(sites) => sites.try_reserve(1).is_ok(),
            Users::Crowded => true,
        };
        if !room || hs_codes_watch(code as *mut c_void) < 0 {
            return false;
        }
        if let Users::Listed(sites) = entry {
            // The site's generation is the one it was made with: its code
            // objects were pinned from then until now, so none of them can
            // have died and had it given back meanwhile.
            let generation = sites::site(site).generation();
            sites.push(User { site, generation });
        }
        true
    }
}

/// Drops the stale entries of a code object's users: sites given back and
/// reused (src/engine/reuse.rs). A long-lived code object (a module running
/// a loop) is in the stack of every site made under it; its list would
/// otherwise grow with every site that ever died there. Done when the list
/// is full; the list then gets room for as many entries again as it keeps,
/// so it costs O(1) per site, amortised (a check per push; room for three
/// times as many, a third of a check, left lists a quarter full). Without
/// that room, a scan that finds only a few stale entries runs again a few
/// pushes later (jinja2's tests, which compile templates all the time: 12%
/// of a --heapsite run). A check compares generations: reading the site's
/// frames to see whether it still names the code object cost 5% of that
/// run.
fn forget_stale_users(sites: &mut Vec<User>) {
    sites.retain(|user| user.current());
    // Failing that, watch_now's own try_reserve(1) decides.
    let _ = sites.try_reserve(sites.len());
}

/// Whether the interpreter is finalising (readable from any thread: a
/// runtime flag). Threads of heapsite's that take the GIL must not start
/// to then: PyGILState_Ensure hangs or ends the thread.
pub fn interpreter_finalizing() -> bool {
    // SAFETY: reads one runtime field, with or without the GIL.
    unsafe { hs_codes_finalizing() != 0 }
}

/// Retires for `code` (dying) the sites `ids` gives, in two passes over
/// them (each pass passes over a site that does not name `code`): the first
/// tells each site whether this is its first dead code object, which the
/// second, retiring frames in place (each of which many sites may name),
/// would hide from the sites after. It allocates only through fallible
/// calls (a site whose frame's record cannot be had loses its frames): this
/// runs in a free function, where running out of memory must not end the
/// program.
///
/// # Safety
/// GIL held; `code`'s fields still intact; no Python code runs meanwhile.
unsafe fn retire_sites<I: Iterator<Item = SiteId>>(code: *mut c_void, ids: impl Fn() -> I) {
    // SAFETY: the caller keeps this fn's contract (`# Safety` above).
    unsafe {
        ids().for_each(|id| sites::retire_site(id, code));
        ids().for_each(|id| sites::retire_frames(id, code));
    }
}

/// The free function: `code` is being deallocated (GIL held, its fields
/// still intact). Nothing here runs Python code or releases references.
unsafe extern "C" fn code_died(code: *mut c_void) {
    // SAFETY: the caller keeps this unsafe fn's contract (its doc above):
    // GIL held, as forget_callers_memo needs.
    unsafe {
        // A new code object at this one's address could give the same
        // instruction pointers: the memo of callers must not vouch for them.
        crate::engine::frames::forget_callers_memo();
        retire_dying(code);
        // Its cursor into its line table (lines.c) must not outlive it:
        // forgotten last, after retiring has read its lines through it.
        hs_lines_forget(code);
    }
}

/// What `code`'s death does to the sites that name it (`code_died`).
///
/// # Safety
/// As `code_died`'s.
unsafe fn retire_dying(code: *mut c_void) {
    // SAFETY: the caller keeps this unsafe fn's contract (its doc above).
    unsafe {
        if hs_codes_finalizing() != 0 {
            // Every module's code dies now; retiring each site would take long
            // at exit, for reports that are already written.
            ABANDONED.store(true, Ordering::Release);
            return;
        }
        let Some(users) = USERS
            .get()
            .as_mut()
            .and_then(|u| u.remove(&(code as usize)))
        else {
            return;
        };
        // Retiring hashes and copies names, which can fail and clear an error:
        // the exception a dying code object's frame may be raising is kept.
        // What it allocates is heapsite's, not the program's line that dropped
        // the code object.
        let retire_all = |retire: &dyn Fn()| {
            keeping_exception(|| sites::untraced(|| crate::engine::own_memory::own_memory(retire)))
        };
        match users {
            Users::Listed(mut users) => {
                users.retain(|user| user.current());
                retire_all(&|| retire_sites(code, || users.iter().map(|user| user.site)));
                // The hook cache's 4,096 entries are each looked up among
                // the retired sites, sorted: a code object dying with
                // thousands of sites under it (a test module's function, in
                // jinja2's tests) made a pass over the list per entry 3% of
                // a --heapsite run.
                users.sort_unstable_by_key(|user| user.site);
                sites::uncache(|id| users.binary_search_by_key(&id, |user| user.site).is_ok());
            }
            Users::Crowded => {
                retire_all(&|| retire_sites(code, || 0..sites::count()));
                // Most of the cache is its sites; without a list of them to
                // look entries up in (which could not be had out of memory),
                // the whole cache goes.
                sites::uncache(|_| true);
            }
        }
        DIED.get().note(code as usize);
    }
}

/// Runs `f` with the thread's current exception, if any, set aside and put
/// back after, whatever `f` raised or cleared.
///
/// # Safety
/// GIL held.
#[allow(deprecated)] // PyErr_Fetch/Restore: the one pair on 3.9 to 3.13
unsafe fn keeping_exception(f: impl FnOnce()) {
    // SAFETY: the caller keeps this fn's contract (`# Safety` above):
    // GIL held.
    unsafe {
        use std::ptr::null_mut;
        let (mut kind, mut value, mut traceback) = (null_mut(), null_mut(), null_mut());
        pyo3_ffi::PyErr_Fetch(&mut kind, &mut value, &mut traceback);
        f();
        pyo3_ffi::PyErr_Clear();
        pyo3_ffi::PyErr_Restore(kind, value, traceback);
    }
}

/// `addr` named a frame that report caches may hold (a retired frame's
/// record, freed): they drop what they hold for it.
///
/// # Safety
/// GIL held.
pub unsafe fn note_freed(addr: usize) {
    // SAFETY: the caller keeps this fn's contract (`# Safety` above):
    // GIL held.
    unsafe {
        DIED.get().note(addr);
    }
}

/// The code objects freed since the last call (for caches keyed by address).
///
/// # Safety
/// GIL held.
pub unsafe fn take_died() -> Died {
    // SAFETY: the caller keeps this fn's contract (`# Safety` above):
    // GIL held.
    unsafe { std::mem::replace(DIED.get(), Died::None) }
}
