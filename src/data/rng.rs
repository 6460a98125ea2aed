//! The pipeline's random numbers: one ChaCha8 stream per (seed, purpose,
//! epoch, item), so that a result depends only on those numbers and never on
//! which thread computed it or in what order.
//!
//! The stream key is spelled out byte by byte and the integer and float
//! draws are written here rather than taken from `rand`'s distributions,
//! whose algorithms may change between versions: a checkpoint resumed after
//! a dependency update still sees the same shuffles and crops.

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

/// What a stream is used for; keeps the streams of different purposes apart
/// even when their other numbers coincide.
#[derive(Clone, Copy, Debug)]
#[repr(u64)]
pub(crate) enum Purpose {
    /// The order of the samples in one epoch.
    Shuffle = 1,
    /// The random crop and flip of one sample in one epoch.
    Augment = 2,
    /// The train/validation split of one class.
    Split = 3,
}

/// The ChaCha8 stream for `(seed, purpose, epoch, item)`: the four numbers,
/// little-endian, are the 256-bit key.
pub(crate) fn stream(seed: u64, purpose: Purpose, epoch: u64, item: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&(purpose as u64).to_le_bytes());
    key[16..24].copy_from_slice(&epoch.to_le_bytes());
    key[24..].copy_from_slice(&item.to_le_bytes());
    ChaCha8Rng::from_seed(key)
}

/// A uniform float in `[lo, hi)` from 53 random bits.
pub(crate) fn uniform(rng: &mut ChaCha8Rng, lo: f64, hi: f64) -> f64 {
    let unit = (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
    lo + (hi - lo) * unit
}

/// A uniform integer in `0..n` (`n > 0`), without modulo bias: draws that
/// fall in the incomplete last block of `u64` values are rejected.
pub(crate) fn below(rng: &mut ChaCha8Rng, n: usize) -> usize {
    debug_assert!(n > 0);
    let n = n as u64;
    // The largest multiple of n that fits, as a count of accepted values.
    let zone = u64::MAX - (u64::MAX - n + 1) % n;
    loop {
        let v = rng.next_u64();
        if v <= zone {
            return (v % n) as usize;
        }
    }
}

/// A uniform random bit.
pub(crate) fn coin(rng: &mut ChaCha8Rng) -> bool {
    rng.next_u64() >> 63 == 1
}

/// Fisher-Yates shuffle.
pub(crate) fn shuffle<T>(items: &mut [T], rng: &mut ChaCha8Rng) {
    for i in (1..items.len()).rev() {
        items.swap(i, below(rng, i + 1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_distinct_and_repeatable() {
        let a = stream(1, Purpose::Augment, 0, 5).next_u64();
        assert_eq!(a, stream(1, Purpose::Augment, 0, 5).next_u64());
        assert_ne!(a, stream(1, Purpose::Augment, 0, 6).next_u64());
        assert_ne!(a, stream(1, Purpose::Augment, 1, 5).next_u64());
        assert_ne!(a, stream(1, Purpose::Shuffle, 0, 5).next_u64());
        assert_ne!(a, stream(2, Purpose::Augment, 0, 5).next_u64());
    }

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut rng = stream(0, Purpose::Shuffle, 0, 0);
        let mut seen = [0usize; 7];
        for _ in 0..7000 {
            seen[below(&mut rng, 7)] += 1;
        }
        assert!(seen.iter().all(|&c| c > 800), "{seen:?}");
        assert_eq!(below(&mut rng, 1), 0);
    }

    #[test]
    fn uniform_in_range() {
        let mut rng = stream(0, Purpose::Augment, 0, 0);
        for _ in 0..1000 {
            let v = uniform(&mut rng, 0.25, 0.5);
            assert!((0.25..0.5).contains(&v));
        }
    }

    #[test]
    fn shuffle_is_a_permutation() {
        let mut v: Vec<usize> = (0..100).collect();
        shuffle(&mut v, &mut stream(3, Purpose::Shuffle, 0, 0));
        assert_ne!(v, (0..100).collect::<Vec<_>>());
        v.sort_unstable();
        assert_eq!(v, (0..100).collect::<Vec<_>>());
    }
}
