//! heapsite's native core: the `heapsite._heapsite` extension module.
//! Folders by layer, each importing only those below it (docs/design.md,
//! "Layout"; `scripts/check-layers` checks it):
//! `engine` < `heap`, `native` < `report` < `py`.

mod engine;
mod heap;
mod native;
mod py;
mod report;
