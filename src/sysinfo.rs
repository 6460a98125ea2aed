//! The little we need to know about the machine.

/// Memory assumed when the system does not say (16 GiB).
const FALLBACK_MEMORY_BYTES: u64 = 16 << 30;

/// Physical memory in bytes (`MemTotal` of `/proc/meminfo` on Linux,
/// 16 GiB elsewhere). Used to refuse configurations whose activations could
/// never fit, before anything is allocated.
pub fn total_memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|rest| rest.trim().strip_suffix("kB"))
                .and_then(|kb| kb.trim().parse::<u64>().ok())
        })
        .map(|kb| kb.saturating_mul(1024))
        .unwrap_or(FALLBACK_MEMORY_BYTES)
}
