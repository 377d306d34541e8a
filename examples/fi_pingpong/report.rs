//! Which sizes a run covers and the table it prints: the C tool's exactly,
//! so scripts that read one read the other.

use std::fmt::Write as _;
use std::time::Duration;

use super::options::Sizes;

/// The default sizes (`fi_pingpong` without `-S`).
const DEFAULT_SIZES: [usize; 6] = [64, 256, 1024, 4096, 65536, 1 << 20];

/// The sizes to run, none above `max` (the largest message the endpoint takes).
///
/// ```
/// use libfabric_examples::fi_pingpong::{test_sizes, Sizes};
/// assert_eq!(test_sizes(Sizes::Default, 4096), [64, 256, 1024, 4096]);
/// assert_eq!(test_sizes(Sizes::All, 12), [0, 1, 2, 3, 4, 6, 8, 12]);
/// assert_eq!(test_sizes(Sizes::One(100), 64), Vec::<usize>::new());
/// ```
pub fn test_sizes(sizes: Sizes, max: usize) -> Vec<usize> {
    match sizes {
        Sizes::One(n) if n <= max => vec![n],
        Sizes::One(_) => Vec::new(),
        Sizes::Default => DEFAULT_SIZES.iter().copied().take_while(|&s| s <= max).collect(),
        Sizes::All => {
            let mut out = vec![0];
            if max >= 1 {
                out.push(1);
            }
            for shift in 1..usize::BITS - 1 {
                let pow = 1usize << shift;
                if pow > max {
                    break;
                }
                out.push(pow);
                if pow + pow / 2 > max {
                    break;
                }
                out.push(pow + pow / 2);
            }
            out
        }
    }
}

/// The table header.
pub const HEADER: &str = "bytes   #sent   #ack     total       time     MB/sec    usec/xfer   Mxfers/sec";

/// One row of results: `sent` round trips of `size` bytes (two transfers
/// each), of which the client saw `acked` come back, in `elapsed`.
pub fn row(size: usize, sent: u64, acked: u64, elapsed: Duration) -> String {
    let micros = elapsed.as_micros() as i64;
    let bytes = sent * size as u64 * 2;
    let mut line = String::with_capacity(96);
    let diff = match sent.cmp(&acked) {
        std::cmp::Ordering::Equal => format!("={}", count(acked)),
        std::cmp::Ordering::Less => format!("-{}", count(acked - sent)),
        std::cmp::Ordering::Greater => format!("+{}", count(sent - acked)),
    };
    // C computes this in single precision; so do we, for the same digits.
    let usec_per_xfer = micros as f32 / sent as f32 / 2.0;
    let _ = write!(
        line,
        "{:<8}{:<8}{:<9}{:<8}{:>8.2}s{:>10.2}{:>11.2}{:>11.2}",
        magnitude(size as u64),
        count(sent),
        diff,
        magnitude(bytes),
        micros as f64 / 1e6,
        bytes as f64 / micros as f64,
        usec_per_xfer,
        1.0 / f64::from(usec_per_xfer),
    );
    line
}

/// A byte count as the C tool writes it: `64`, `1k`, `1.5k`, `10m`.
pub fn magnitude(size: u64) -> String {
    let (base, mag) = match size {
        s if s >= 1 << 30 => (1u64 << 30, "g"),
        s if s >= 1 << 20 => (1 << 20, "m"),
        s if s >= 1 << 10 => (1 << 10, "k"),
        _ => (1, ""),
    };
    let fraction = if size / base < 10 { (size % base) * 10 / base } else { 0 };
    if fraction > 0 {
        format!("{}.{fraction}{mag}", size / base)
    } else {
        format!("{}{mag}", size / base)
    }
}

/// A message count as the C tool writes it: `10`, `10k`, `1m`.
pub fn count(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{}b", n / 1_000_000_000),
        n if n >= 1_000_000 => format!("{}m", n / 1_000_000),
        n if n >= 1000 => format!("{}k", n / 1000),
        n => n.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_match_the_c_layout() {
        // A row fi_pingpong printed: 64 bytes, 10 round trips in 2.25 ms.
        assert_eq!(
            row(64, 10, 10, Duration::from_micros(2246)),
            "64      10      =10      1.2k        0.00s      0.57     112.30       0.01"
        );
        assert_eq!(magnitude(1536), "1.5k");
        assert_eq!(magnitude(10 << 20), "10m");
        assert_eq!(count(12_345), "12k");
        assert_eq!(test_sizes(Sizes::All, 1), [0, 1]);
    }
}
