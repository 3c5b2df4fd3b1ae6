//! Which sites grew in every round of a piece of work run again and again
//! (the pytest plugin's leak check: a test's body, three rounds after a
//! base), by live bytes and by live blocks, kept here rather than in Python
//! arrays: a click session has 339,000 sites, and comparing them round by
//! round in Python cost a sixth of its checked run.

use super::sites::SiteId;
use super::{Growth, Settled};

/// The sites' live figures at one reading, indexed by site id.
#[derive(Clone)]
struct Reading {
    bytes: Vec<i64>,
    counts: Vec<i64>,
}

impl Reading {
    fn of(engine: &Settled) -> Reading {
        let count = engine.site_count() as usize;
        let (mut bytes, mut counts) = (Vec::with_capacity(count), Vec::with_capacity(count));
        for id in 0..count as SiteId {
            let totals = engine.totals(id);
            bytes.push(totals.live_bytes);
            counts.push(totals.live_count);
        }
        Reading { bytes, counts }
    }
}

/// A site newer than a reading held nothing then.
fn at(column: &[i64], index: usize) -> i64 {
    column.get(index).copied().unwrap_or(0)
}

/// Sites whose figure went up from `before` to `now` in every comparison
/// so far: a flag per site, set by the first comparison (for the sites
/// known then), then only ever cleared.
fn narrow(grew: &mut Vec<bool>, first: bool, before: &[i64], now: &[i64]) {
    if first {
        *grew = (0..now.len()).map(|i| now[i] > at(before, i)).collect();
    } else {
        for (i, flag) in grew.iter_mut().enumerate() {
            *flag = *flag && at(now, i) > at(before, i);
        }
    }
}

/// The rounds of one piece of work: its base reading, the last one, and
/// which sites grew in every round since the base.
pub struct Rounds {
    base: Reading,
    last: Reading,
    grew_bytes: Vec<bool>,
    grew_counts: Vec<bool>,
    compared: usize,
}

impl Rounds {
    /// Starts from the figures now (the base).
    pub fn begin(engine: &Settled) -> Rounds {
        let base = Reading::of(engine);
        Rounds {
            last: base.clone(),
            base,
            grew_bytes: Vec::new(),
            grew_counts: Vec::new(),
            compared: 0,
        }
    }

    /// A round ended: compares the figures now with the last reading.
    pub fn add(&mut self, engine: &Settled) {
        let now = Reading::of(engine);
        let first = self.compared == 0;
        narrow(&mut self.grew_bytes, first, &self.last.bytes, &now.bytes);
        narrow(&mut self.grew_counts, first, &self.last.counts, &now.counts);
        self.last = now;
        self.compared += 1;
    }

    /// The sites whose live bytes (or, `by_count`, live blocks) grew in
    /// every round so far, by id; none before a round was added.
    pub fn grew(&self, by_count: bool) -> Vec<SiteId> {
        let flags = if by_count {
            &self.grew_counts
        } else {
            &self.grew_bytes
        };
        (0..flags.len())
            .filter(|&i| flags[i])
            .map(|i| i as SiteId)
            .collect()
    }

    /// The sites holding more bytes now than at the base, most growth
    /// first.
    pub fn grown(&self, engine: &Settled) -> Vec<Growth> {
        engine.grown_since(&self.base.bytes, &self.base.counts)
    }
}

#[cfg(test)]
mod tests {
    use super::narrow;

    #[test]
    fn a_site_grows_in_every_round_or_not_at_all() {
        let mut grew = Vec::new();
        narrow(&mut grew, true, &[5, 5, 5], &[6, 5, 4, 1]);
        assert_eq!(grew, [true, false, false, true]);
        // A site new since the first round did not grow in it; one that
        // stops growing is out for good.
        narrow(&mut grew, false, &[6, 5, 4, 1], &[7, 9, 9, 1, 3]);
        assert_eq!(grew, [true, false, false, false]);
        narrow(&mut grew, false, &[7, 9, 9, 1, 3], &[8, 10, 10, 2, 4]);
        assert_eq!(grew, [true, false, false, false]);
    }
}
