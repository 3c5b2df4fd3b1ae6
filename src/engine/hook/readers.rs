//! Readers of what the hooks recorded. The engine's façade
//! (`engine::settled`) is their way out of the engine; `lookup` is also the
//! heap walk's, per object.

use super::*;

/// Number of live allocations recorded.
pub(in crate::engine) fn live_allocations() -> usize {
    // SAFETY: GIL held by the API caller.
    let gil = settled_gil_table().len();
    gil + RAW_TABLE
        .shards()
        .iter()
        .map(|s| s.lock().len())
        .sum::<usize>()
}

/// Gives back the tables' memory if the program is past its peak (see
/// src/engine/table.rs's SHRINK_LIVE for why at a reading, not as blocks are
/// freed). For the readers of figures alone: `settle`, which
/// PyTraceMalloc_Track also calls (numpy, at every array), must not. GIL
/// held.
pub(in crate::engine) fn shrink_tables() {
    // SAFETY: GIL held by the API caller.
    unsafe { GIL_TABLE.get() }.shrink_if_sparse();
    for shard in RAW_TABLE.shards() {
        shard.lock().shrink_if_sparse();
    }
}

/// Bytes heapsite holds from malloc: its tables, sites and all the rest,
/// counted by its allocator (src/engine/counted_alloc.rs).
pub(in crate::engine) fn tracking_bytes() -> usize {
    crate::engine::counted_alloc::held_bytes()
}

/// Visits every live allocation: address and record. GIL held. `visit` may
/// allocate (a list of traces) while a RAW shard is locked: that memory is
/// heapsite's own (see `own_memory::own_memory`).
pub(in crate::engine) fn for_each_live(mut visit: impl FnMut(usize, Record)) {
    settled_gil_table().for_each(account_free::<false>, &mut visit);
    crate::engine::own_memory::own_memory(|| {
        for shard in RAW_TABLE.shards() {
            shard.lock().for_each(&mut visit);
        }
    });
}

pub(in crate::engine) fn dropped() -> usize {
    DROPPED.load(Relaxed)
}

/// The record of a live allocation, if heapsite has one. GIL held.
pub fn lookup(addr: usize) -> Option<Record> {
    if never_sampled(addr) {
        return None; // nothing to look up (the heap walk asks for every object)
    }
    settled_gil_table()
        .get(addr, account_free::<false>)
        .or_else(|| RAW_TABLE.shard(addr).get(addr))
}
