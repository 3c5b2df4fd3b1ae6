//! The engine: the allocator hooks and everything they touch on the hot path
//! (live tables, nursery, counters, call-site and code-object bookkeeping,
//! frame reading). It imports nothing from the other layers.

pub mod codes;
pub mod counters;
pub mod fallible;
pub mod frames;
pub mod hook;
pub mod interner;
pub mod interp;
pub mod native_frames;
pub mod nursery;
pub mod own_memory;
pub mod own_work;
pub mod relheap;
pub mod retired;
pub mod reuse;
pub mod segvec;
pub mod sites;
pub mod sync;
pub mod table;

#[cfg(test)]
mod tests;
