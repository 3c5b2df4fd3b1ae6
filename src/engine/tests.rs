//! Property tests of the engine's core against plain models, under long
//! random sequences (a fixed-seed xorshift, so that a failure repeats):
//! - the interner against a map from stack to site, with colliding hashes
//!   and sites leaving the index;
//! - the peak-epoch counters (O(1) per event) against "what each site held
//!   at the latest peak", recomputed by copying every site at each peak;
//! - the nursery in front of the address table, accounted as the hooks
//!   account it, against a plain map under allocator-like malloc, realloc
//!   and free sequences;
//! - the address table alone against a plain map, odd addresses and huge
//!   sizes included, through its rebuilds.

use super::counters::{self, SiteCounters};
use super::interner::Interner;
use super::nursery::GilTable;
use super::sites::{self, SiteId};
use super::table::{AddrTable, Domain, Record};
use std::collections::HashMap;
use std::sync::Mutex;

/// The counters' globals (current, peak, epoch) are the process's: the tests
/// that move them take turns.
pub(super) static GLOBALS: Mutex<()> = Mutex::new(());

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

#[test]
fn interner_matches_a_map_of_stacks() {
    // A weak hash on purpose: many stacks share one, and runs of keys merge.
    let hash = |stack: &[u32]| stack.iter().map(|&f| u64::from(f)).sum::<u64>() % 97;
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut index = Interner::new();
    let mut model: HashMap<Vec<u32>, SiteId> = HashMap::new();
    let mut stack_of: HashMap<SiteId, Vec<u32>> = HashMap::new();
    let mut interned: Vec<Vec<u32>> = Vec::new(); // the model's keys, to pick from
    let mut next_id: SiteId = 0;
    for step in 0..60_000u32 {
        let depth = 1 + rng.below(4) as usize;
        let stack: Vec<u32> = (0..depth).map(|_| rng.below(40) as u32).collect();
        let found = index.find(hash(&stack), |id| stack_of[&id] == stack);
        match (found, model.get(&stack)) {
            (Some(id), Some(&want)) => assert_eq!(id, want, "step {step}"),
            (Some(id), None) => {
                panic!("step {step}: {stack:?} found as {id}, never interned")
            }
            (None, Some(want)) => panic!("step {step}: {stack:?} lost (site {want})"),
            (None, None) => {
                assert!(index.reserve_one(|other| hash(&stack_of[&other])));
                index.insert(hash(&stack), next_id, |other| hash(&stack_of[&other]));
                model.insert(stack.clone(), next_id);
                interned.push(stack.clone());
                stack_of.insert(next_id, stack);
                next_id += 1;
            }
        }
        // Sites whose code died leave the index.
        if rng.chance(30) && !model.is_empty() {
            let victim = interned.swap_remove(rng.below(interned.len() as u64) as usize);
            let id = model.remove(&victim).expect("interned");
            index.remove(hash(&victim), id);
            stack_of.remove(&id);
        }
        if step % 5000 == 0 {
            for (stack, &id) in &model {
                let found = index.find(hash(stack), |other| stack_of[&other] == *stack);
                assert_eq!(found, Some(id), "step {step}");
            }
        }
    }
}

/// What the counters should say, recomputed the slow way.
#[derive(Default)]
struct CountersModel {
    gil_live: Vec<(i64, i64)>,   // (count, bytes) per site
    nogil_live: Vec<(i64, i64)>, // (count, bytes) per site
    total: Vec<(i64, i64)>,
    gil_current: i64,
    nogil_current: i64,
    peak: i64,
    at_peak: Vec<(i64, i64)>, // each site's GIL-held figures at the latest peak
}

#[test]
fn peak_epochs_match_a_copy_at_every_peak() {
    let _turn = GLOBALS.lock().unwrap_or_else(|e| e.into_inner());
    const SITES: usize = 12;
    counters::reset_globals();
    let sites: Vec<SiteCounters> = (0..SITES).map(|_| SiteCounters::default()).collect();
    let mut m = CountersModel {
        gil_live: vec![(0, 0); SITES],
        nogil_live: vec![(0, 0); SITES],
        total: vec![(0, 0); SITES],
        at_peak: vec![(0, 0); SITES],
        ..CountersModel::default()
    };
    let mut blocks: Vec<(usize, i64, bool)> = Vec::new(); // (site, size, with the GIL)
    let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
    for step in 0..200_000u32 {
        let roll = rng.below(100);
        if roll < 45 || blocks.is_empty() {
            let site = rng.below(SITES as u64) as usize;
            let bound = if rng.chance(5) { 100_000 } else { 600 };
            let size = 1 + rng.below(bound) as i64;
            let gil = !rng.chance(10);
            if gil {
                sites[site].add_gil(size as usize);
                m.gil_live[site].0 += 1;
                m.gil_live[site].1 += size;
                m.gil_current += size;
                if m.gil_current + m.nogil_current > m.peak {
                    m.peak = m.gil_current + m.nogil_current;
                    m.at_peak.clone_from(&m.gil_live);
                }
            } else {
                assert!(sites[site].add_nogil(size as usize));
                m.nogil_live[site].0 += 1;
                m.nogil_live[site].1 += size;
                m.nogil_current += size;
            }
            m.total[site].0 += 1;
            m.total[site].1 += size;
            blocks.push((site, size, gil));
        } else if roll < 99 {
            let (site, size, gil) = blocks.swap_remove(rng.below(blocks.len() as u64) as usize);
            if gil {
                sites[site].sub_gil(size as usize);
                m.gil_live[site].0 -= 1;
                m.gil_live[site].1 -= size;
                m.gil_current -= size;
            } else {
                assert!(sites[site].sub_nogil(size as usize));
                m.nogil_live[site].0 -= 1;
                m.nogil_live[site].1 -= size;
                m.nogil_current -= size;
            }
        } else {
            counters::reset_peak();
            m.peak = m.gil_current + m.nogil_current;
            m.at_peak.clone_from(&m.gil_live);
        }
        let current = m.gil_current + m.nogil_current;
        assert_eq!(
            counters::traced_memory(),
            (current, m.peak.max(current)),
            "step {step}"
        );
        if step % 97 == 0 || roll >= 99 {
            for (site, counters) in sites.iter().enumerate() {
                let t = counters.totals();
                let (gil, nogil) = (m.gil_live[site], m.nogil_live[site]);
                assert_eq!(
                    (t.live_count, t.live_bytes),
                    (gil.0 + nogil.0, gil.1 + nogil.1)
                );
                assert_eq!((t.total_count, t.total_bytes), m.total[site]);
                let at_peak = m.at_peak[site];
                assert_eq!(
                    (t.peak_count, t.peak_bytes),
                    (at_peak.0 + nogil.0, at_peak.1 + nogil.1),
                    "step {step}, site {site}"
                );
            }
        }
    }
    counters::reset_globals();
}

fn record(size: usize, site: SiteId) -> Record {
    Record {
        size,
        site,
        domain: if site.is_multiple_of(2) {
            Domain::Mem
        } else {
            Domain::Obj
        },
    }
}

/// The nursery and the table behind it, driven as the MEM/OBJ hooks drive
/// them (a free reported now or a few frees later, settled before every
/// allocation; a realloc forgets its old block, then records the new one),
/// against a plain map: every free is reported exactly once with its own
/// record and site, and once settled the per-site bytes, the number of
/// blocks and every lookup agree with the map.
#[test]
fn nursery_and_table_match_a_map_under_malloc_realloc_free() {
    sites::init();
    const SITES: u32 = 24;
    let mut table = GilTable::new();
    let mut model: HashMap<usize, Record> = HashMap::new();
    let mut accounted: HashMap<SiteId, i64> = HashMap::new();
    let mut free_addrs: Vec<usize> = (1..=40_000).map(|i| i * 16).collect();
    let mut live: Vec<usize> = Vec::new();
    let mut rng = XorShift(0xD1B5_4A32_D192_ED03);

    fn account(accounted: &mut HashMap<SiteId, i64>, freed: super::nursery::Freed) {
        assert!(std::ptr::eq(freed.site, sites::site(freed.record.site)));
        *accounted.entry(freed.record.site).or_default() -= freed.record.size as i64;
    }
    let record_new =
        |table: &mut GilTable, accounted: &mut HashMap<SiteId, i64>, addr: usize, rec: Record| {
            table.settle(|f| account(accounted, f));
            match table.insert(addr, rec, sites::site(rec.site)) {
                Ok(None) => {}
                Ok(Some(stale)) => panic!("{addr:#x} was live already: {stale:?}"),
                Err(lost) => panic!("no memory for {lost:?}"),
            }
            *accounted.entry(rec.site).or_default() += rec.size as i64;
        };

    for step in 0..300_000u32 {
        let roll = rng.below(100);
        if roll < 50 && !free_addrs.is_empty() || live.is_empty() {
            // malloc: pymalloc-like, the block freed last is handed out first.
            let pick = if rng.chance(70) {
                free_addrs.len() - 1
            } else {
                rng.below(free_addrs.len() as u64) as usize
            };
            let addr = free_addrs.swap_remove(pick);
            let rec = record(1 + rng.below(2000) as usize, rng.below(SITES as u64) as u32);
            record_new(&mut table, &mut accounted, addr, rec);
            model.insert(addr, rec);
            live.push(addr);
        } else if roll < 65 {
            // realloc: in place or moved; the old block is forgotten first.
            let i = rng.below(live.len() as u64) as usize;
            let old = live[i];
            let new = if rng.chance(50) || free_addrs.is_empty() {
                old
            } else {
                let j = rng.below(free_addrs.len() as u64) as usize;
                let new = free_addrs.swap_remove(j);
                free_addrs.push(old);
                new
            };
            table.remove(old, |f| account(&mut accounted, f));
            model.remove(&old);
            let rec = record(1 + rng.below(5000) as usize, rng.below(SITES as u64) as u32);
            record_new(&mut table, &mut accounted, new, rec);
            model.insert(new, rec);
            live[i] = new;
        } else {
            // free
            let addr = live.swap_remove(rng.below(live.len() as u64) as usize);
            table.remove(addr, |f| account(&mut accounted, f));
            model.remove(&addr);
            free_addrs.push(addr);
        }
        if step % 2500 == 0 {
            table.settle(|f| account(&mut accounted, f));
            assert_eq!(table.len(), model.len(), "step {step}");
            let mut want: HashMap<SiteId, i64> = HashMap::new();
            for rec in model.values() {
                *want.entry(rec.site).or_default() += rec.size as i64;
            }
            accounted.retain(|_, bytes| *bytes != 0);
            assert_eq!(accounted, want, "step {step}");
            for (&addr, rec) in &model {
                assert_eq!(table.get(addr, |f| account(&mut accounted, f)), Some(*rec));
            }
            let mut seen = 0;
            table.for_each(
                |f| account(&mut accounted, f),
                |addr, rec| {
                    assert_eq!(model.get(&addr), Some(&rec), "step {step}");
                    seen += 1;
                },
            );
            assert_eq!(seen, model.len());
        }
    }
}

/// The table alone: inserts over live addresses return what they replace,
/// odd addresses and sizes of 1 MiB or more keep exact figures, and
/// tombstones and rebuilds lose nothing.
#[test]
fn address_table_matches_a_map() {
    let mut table = AddrTable::new();
    let mut model: HashMap<usize, Record> = HashMap::new();
    let mut rng = XorShift(0x94D0_49BB_1331_11EB);
    for step in 0..400_000u32 {
        let addr = match rng.below(20) {
            0 => 0x7f00_0000_0000 + rng.below(5000) as usize * 8 + 3, // odd
            1 => (1 << 48) + rng.below(1000) as usize * 16,           // beyond 2^47
            _ => 0x5555_0000_0000 + rng.below(60_000) as usize * 16,
        };
        match rng.below(10) {
            0..=4 => {
                let size = if rng.chance(3) {
                    (1 << 20) + rng.below(1 << 24) as usize
                } else {
                    rng.below(4096) as usize
                };
                let rec = record(size, rng.below(1 << 20) as u32);
                assert_eq!(
                    table.insert(addr, rec),
                    Ok(model.insert(addr, rec)),
                    "step {step}"
                );
            }
            5..=8 => assert_eq!(table.remove(addr), model.remove(&addr), "step {step}"),
            _ => assert_eq!(table.get(addr), model.get(&addr).copied(), "step {step}"),
        }
        assert_eq!(table.len(), model.len(), "step {step}");
    }
    let mut seen = HashMap::new();
    table.for_each(|addr, rec| assert!(seen.insert(addr, rec).is_none()));
    assert_eq!(seen, model);
}
