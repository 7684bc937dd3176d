//! The randomness of choices between endpoints and between backends: xorshift64*, seeded
//! from the clock and where the source lives. Plenty for spreading load, and no
//! dependency; never for anything secret.

use std::sync::atomic::{AtomicU64, Ordering};

/// A source of random numbers, shared by whoever holds it (races only mix its state).
#[derive(Debug, Default)]
pub struct Random(AtomicU64);

impl Random {
    /// The next number.
    pub fn next_u64(&self) -> u64 {
        let mut x = self.0.load(Ordering::Relaxed);
        if x == 0 {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64);
            x = (nanos ^ (self as *const Self as u64)) | 1;
        }
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0.store(x, Ordering::Relaxed);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number below `n` (`n` > 0), near enough uniform for weights up to 2^32.
    pub fn below(&self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_below_a_bound_are_spread_over_it() {
        let random = Random::default();
        let mut seen = [0u32; 10];
        for _ in 0..10_000 {
            seen[random.below(10) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| (800..1200).contains(&n)), "{seen:?}");
    }
}
