//! Redirects other libraries' calls to a function through their GOT.
//!
//! Extension modules call `PyTraceMalloc_Track`/`Untrack` (numpy does, for its
//! array data) through their own Global Offset Table slots, which the dynamic
//! linker filled with libpython's address. heapsite rewrites those slots in
//! every loaded object to point at its own function, which records the call
//! and forwards to libpython. Libraries loaded later (a module imported after
//! `start()`) are caught by redirecting `dlopen` the same way and patching
//! again after each load.
//!
//! Invariants: only x86_64 Linux (elsewhere nothing is patched); heapsite's
//! own object is never patched (its calls reach the real functions); a slot
//! is one aligned word, so a thread calling through it sees the old or the
//! new target, never a torn one; patching is idempotent.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::Mutex;

/// (symbol, replacement) pairs to install.
pub type Redirects = &'static [(&'static CStr, usize)];

static REDIRECTS: Mutex<Option<Redirects>> = Mutex::new(None);

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod elf {
    pub const DT_NULL: i64 = 0;
    pub const DT_PLTRELSZ: i64 = 2;
    pub const DT_STRTAB: i64 = 5;
    pub const DT_SYMTAB: i64 = 6;
    pub const DT_RELA: i64 = 7;
    pub const DT_RELASZ: i64 = 8;
    pub const DT_JMPREL: i64 = 23;
    pub const R_X86_64_GLOB_DAT: u64 = 6;
    pub const R_X86_64_JUMP_SLOT: u64 = 7;

    #[repr(C)]
    pub struct Dyn {
        pub tag: i64,
        pub val: u64,
    }

    #[repr(C)]
    pub struct Rela {
        pub offset: u64,
        pub info: u64,
        pub addend: i64,
    }
}

/// Installs `redirects` in every loaded object, and in every object loaded
/// from now on. Returns how many slots were rewritten now.
pub fn install(redirects: Redirects) -> usize {
    let mut current = REDIRECTS.lock().unwrap_or_else(|e| e.into_inner());
    *current = Some(redirects);
    drop(current);
    patch_loaded()
}

/// Rewrites the slots of every loaded object for the installed redirects
/// (and `dlopen`).
fn patch_loaded() -> usize {
    let Some(redirects) = *REDIRECTS.lock().unwrap_or_else(|e| e.into_inner()) else {
        return 0;
    };
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    {
        let mut all: Vec<(&CStr, usize)> = redirects.to_vec();
        all.push((c"dlopen", heapsite_dlopen as *const () as usize));
        let mut state = (all, 0usize, own_base());
        // SAFETY: the callback only reads the loader's own data structures.
        unsafe { libc::dl_iterate_phdr(Some(visit_object), &mut state as *mut _ as *mut c_void) };
        state.1
    }
    #[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
    {
        let _ = redirects;
        0
    }
}

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn own_base() -> usize {
    // SAFETY: Dl_info is plain data; dladdr asks the loader which object
    // holds this function.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: as above; `info` is ours to fill.
    unsafe { libc::dladdr(patch_loaded as *const c_void, &mut info) };
    info.dli_fbase as usize
}

/// `dlopen` as the other objects now call it: load, then patch what came in.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
unsafe extern "C" fn heapsite_dlopen(filename: *const c_char, flags: c_int) -> *mut c_void {
    // SAFETY: the caller keeps this unsafe fn's contract (its doc above).
    unsafe {
        let handle = libc::dlopen(filename, flags);
        if !handle.is_null() {
            patch_loaded();
        }
        handle
    }
}

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
unsafe extern "C" fn visit_object(
    info: *mut libc::dl_phdr_info,
    _: usize,
    data: *mut c_void,
) -> c_int {
    // SAFETY: the caller keeps this unsafe fn's contract (its doc above).
    unsafe {
        let (redirects, patched, own) = &mut *(data as *mut (Vec<(&CStr, usize)>, usize, usize));
        let info = &*info;
        let base = info.dlpi_addr as usize;
        if base == *own || info.dlpi_phdr.is_null() {
            return 0;
        }
        let headers = std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize);
        for header in headers.iter().filter(|h| h.p_type == libc::PT_DYNAMIC) {
            *patched += patch_object(
                base,
                (base + header.p_vaddr as usize) as *const elf::Dyn,
                redirects,
            );
        }
        0
    }
}

/// Rewrites the GOT slots of one object whose symbol is redirected.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
unsafe fn patch_object(
    base: usize,
    dynamic: *const elf::Dyn,
    redirects: &[(&CStr, usize)],
) -> usize {
    // SAFETY: the caller keeps this unsafe fn's contract (its doc above).
    unsafe {
        use elf::*;
        let (mut strtab, mut symtab) = (0usize, 0usize);
        let (mut rela, mut rela_size, mut jmprel, mut jmprel_size) =
            (0usize, 0usize, 0usize, 0usize);
        let mut entry = dynamic;
        while (*entry).tag != DT_NULL {
            let value = (*entry).val as usize;
            // The loader relocates these in place for most objects; where it did
            // not, they are still offsets from the base.
            let address = if value < base { base + value } else { value };
            match (*entry).tag {
                DT_STRTAB => strtab = address,
                DT_SYMTAB => symtab = address,
                DT_RELA => rela = address,
                DT_RELASZ => rela_size = value,
                DT_JMPREL => jmprel = address,
                DT_PLTRELSZ => jmprel_size = value,
                _ => {}
            }
            entry = entry.add(1);
        }
        if strtab == 0 || symtab == 0 {
            return 0;
        }
        let mut patched = 0;
        for (table, size) in [(jmprel, jmprel_size), (rela, rela_size)] {
            if table == 0 {
                continue;
            }
            let relocations = std::slice::from_raw_parts(
                table as *const Rela,
                size / std::mem::size_of::<Rela>(),
            );
            for relocation in relocations {
                let kind = relocation.info & 0xffff_ffff;
                if kind != R_X86_64_JUMP_SLOT && kind != R_X86_64_GLOB_DAT {
                    continue;
                }
                let symbol =
                    &*((symtab as *const libc::Elf64_Sym).add((relocation.info >> 32) as usize));
                let name = CStr::from_ptr((strtab + symbol.st_name as usize) as *const c_char);
                let Some(&(_, target)) = redirects.iter().find(|(wanted, _)| *wanted == name)
                else {
                    continue;
                };
                let slot = (base + relocation.offset as usize) as *mut usize;
                if std::ptr::read_volatile(slot) != target && make_writable(slot) {
                    std::ptr::write_volatile(slot, target);
                    patched += 1;
                }
            }
        }
        patched
    }
}

/// Makes the page holding `slot` writable (RELRO maps the GOT read-only).
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
unsafe fn make_writable(slot: *mut usize) -> bool {
    // SAFETY: the caller keeps this unsafe fn's contract (its doc above).
    unsafe {
        let page = libc::sysconf(libc::_SC_PAGESIZE).max(4096) as usize;
        let start = (slot as usize) & !(page - 1);
        libc::mprotect(
            start as *mut c_void,
            page,
            libc::PROT_READ | libc::PROT_WRITE,
        ) == 0
    }
}
