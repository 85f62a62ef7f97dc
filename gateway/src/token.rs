//! Project and admin API tokens: generation and hashing (the config stores only SHA-256).

use rand::RngCore as _;
use sha2::{Digest as _, Sha256};

/// Prefix of generated tokens, so they are recognisable in secret scanners.
const PREFIX: &str = "ptk_";

/// A fresh random token: 32 bytes from the OS generator, hex-encoded behind [`PREFIX`].
pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    // ThreadRng is a CSPRNG seeded from the OS and reseeded periodically.
    rand::rng().fill_bytes(&mut bytes);
    format!("{PREFIX}{}", hex(&bytes))
}

/// SHA-256 of a token.
pub fn sha256(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// SHA-256 of a token as 64 lowercase hex characters, the form the config holds.
pub fn sha256_hex(token: &str) -> String {
    hex(&sha256(token))
}

/// Compares two digests in time independent of where they differ.
pub fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // Keeps the compiler from turning the fold into an early-exit comparison.
    std::hint::black_box(difference) == 0
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)] as char);
        out.push(DIGITS[usize::from(byte & 0xf)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tokens are prefixed, long, and never repeat.
    #[test]
    fn tokens_are_random() {
        let a = generate();
        let b = generate();
        assert!(a.starts_with(PREFIX));
        assert_eq!(a.len(), PREFIX.len() + 64);
        assert_ne!(a, b);
    }

    /// Equal digests compare equal; a difference in any byte does not.
    #[test]
    fn compares_digests() {
        let a = sha256("a");
        assert!(constant_time_eq(&a, &sha256("a")));
        for i in 0..32 {
            let mut b = a;
            b[i] ^= 1;
            assert!(!constant_time_eq(&a, &b));
        }
    }

    /// The hash is the standard SHA-256 in lowercase hex.
    #[test]
    fn hashes_like_sha256sum() {
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
