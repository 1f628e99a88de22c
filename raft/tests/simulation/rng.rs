//! The simulation's only source of randomness: SplitMix64, seeded per run, so one seed
//! replays one schedule exactly.

use tessera_raft::rng::SeededRng;

/// The core's own generator, with the draws a schedule needs on top.
#[derive(Clone, Debug)]
pub struct Rng {
    inner: SeededRng,
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng { inner: SeededRng::new(seed) }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.inner.next_u64()
    }

    /// A value in `[0, bound)`; `bound` must be positive.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.inner.below(bound)
    }

    /// A value in `[low, high]`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        assert!(low <= high, "invariant: between() needs low <= high");
        low + self.below(high - low + 1)
    }

    /// True with probability `permille / 1000`.
    pub fn chance(&mut self, permille: u64) -> bool {
        self.below(1000) < permille
    }

    pub fn coin(&mut self) -> bool {
        self.next_u64() & 1 == 1
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}
