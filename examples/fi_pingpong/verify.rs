//! The data check of `-c`: the C tool's byte pattern, so either side may be C.
//!
//! Message `i` (counted separately for sending and receiving, from 0) starts
//! at letter `i * 7 mod 62` of the alphabet and runs through it cyclically.

const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
const SEED: usize = 7;

/// Fills outgoing messages and checks incoming ones, each with its own count.
#[derive(Debug, Default)]
pub struct Pattern {
    sent: usize,
    received: usize,
}

/// Where a received message first differs from the pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The message's number (from 1, as the C tool prints it).
    pub iteration: usize,
    /// The byte that differs.
    pub byte: usize,
}

impl Pattern {
    /// Writes the next outgoing message's pattern into `buf`.
    pub fn fill(&mut self, buf: &mut [u8]) {
        let start = self.sent * SEED % ALPHABET.len();
        self.sent += 1;
        for (i, b) in buf.iter_mut().enumerate() {
            *b = ALPHABET[(start + i) % ALPHABET.len()];
        }
    }

    /// Checks the next incoming message.
    ///
    /// ```
    /// use libfabric_examples::fi_pingpong::Pattern;
    /// let (mut tx, mut rx) = (Pattern::default(), Pattern::default());
    /// let mut msg = [0u8; 100];
    /// tx.fill(&mut msg);
    /// assert!(rx.check(&msg).is_ok());
    /// tx.fill(&mut msg);
    /// msg[42] ^= 1;
    /// assert_eq!(rx.check(&msg).unwrap_err().byte, 42);
    /// ```
    pub fn check(&mut self, buf: &[u8]) -> Result<(), Mismatch> {
        let start = self.received * SEED % ALPHABET.len();
        self.received += 1;
        match buf.iter().enumerate().position(|(i, b)| *b != ALPHABET[(start + i) % ALPHABET.len()]) {
            None => Ok(()),
            Some(byte) => Err(Mismatch { iteration: self.received, byte }),
        }
    }
}
