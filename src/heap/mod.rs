//! The heap walk: objects reachable from the gc-tracked ones, their kinds and
//! sizes, owners of dicts and buffers, paths to a root. Uses the engine (to
//! join each object to its allocation's site); the engine does not use it.

pub mod kinds;
pub mod objects;
