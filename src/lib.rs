//! heapsite's native core: the `heapsite._heapsite` extension module.
//! Folders by layer, each importing only those below it (docs/design.md,
//! "Layout"; `scripts/check-layers` checks it):
//! `engine` < `heap`, `native` < `report` < `serve` < `py`.

// The unsafe edge stays visible: an unsafe fn's body is not an unsafe block
// by itself, and every unsafe block (and impl) says why it is sound in a
// `// SAFETY:` note (checked by `cargo clippy -D warnings` in test-all).
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod engine;
mod heap;
mod native;
mod py;
mod report;
mod serve;
