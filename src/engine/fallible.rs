//! Allocation that reports failure instead of aborting the program.
//!
//! Rust aborts the process when an allocation fails, and heapsite runs
//! inside the program it observes: a program that runs out of memory, and
//! catches the MemoryError, must not be killed by heapsite's own
//! bookkeeping. What heapsite allocates while the program runs goes through
//! these; the caller drops the record it was for.

/// A boxed copy of `items`.
pub fn try_copy<T: Copy>(items: &[T]) -> Option<Box<[T]>> {
    try_collect(items.iter().map(|&item| Some(item)))
}

/// A boxed slice of the items, or None if any is None or memory is short.
pub fn try_collect<T>(items: impl ExactSizeIterator<Item = Option<T>>) -> Option<Box<[T]>> {
    let mut collected = Vec::new();
    collected.try_reserve_exact(items.len()).ok()?;
    for item in items {
        collected.push(item?);
    }
    // Exactly as long as its capacity: boxing it does not reallocate.
    Some(collected.into_boxed_slice())
}

/// `value`, moved to the heap for good.
pub fn try_leak<T>(value: T) -> Option<&'static mut T> {
    let boxed = try_collect(std::iter::once(Some(value)))?;
    Box::leak(boxed).first_mut()
}

/// A copy of `text` that is heapsite's own.
pub fn try_str(text: &str) -> Option<&'static str> {
    let bytes = try_copy(text.as_bytes())?;
    std::str::from_utf8(Box::leak(bytes)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_collects_and_leaks() {
        assert_eq!(&*try_copy(&[1, 2, 3]).unwrap(), &[1, 2, 3]);
        assert!(try_collect([Some(1), None].into_iter()).is_none());
        assert_eq!(*try_leak(7u8).unwrap(), 7);
        assert_eq!(try_str("café").unwrap(), "café");
    }
}
