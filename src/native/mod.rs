//! Native memory and the LD_PRELOAD entry: the preload constructor, malloc /
//! mmap interposition, GOT redirection, tracked blocks, the SIGTERM deadline
//! and the memory-over-time series. Uses the engine (to record what it sees);
//! the engine does not use it.

pub mod got;
pub mod interpose;
pub mod own_thread;
pub mod preload;
pub mod sigterm;
pub mod timeline;
pub mod tracked;
