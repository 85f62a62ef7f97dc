//! Addresses of one family as plain integers, so the compiled tables are written once for
//! IPv4 (`u32`) and IPv6 (`u128`).

use std::fmt::Debug;

/// An address of one family, in host order.
pub(crate) trait Key: Copy + Ord + Debug {
    /// The first address.
    const ZERO: Self;

    /// The last address of the block of `prefix` bits that starts at `self`.
    fn last(self, prefix: u8) -> Self;

    /// The next address, or `None` after the last one.
    fn succ(self) -> Option<Self>;

    /// The top `bits` bits (1..=16) as a bucket number.
    fn top(self, bits: u32) -> usize;
}

macro_rules! impl_key {
    ($t:ty) => {
        impl Key for $t {
            const ZERO: Self = 0;

            fn last(self, prefix: u8) -> Self {
                // The host mask; `checked_shr` is `None` for a full-length prefix, which has none.
                self | <$t>::MAX.checked_shr(u32::from(prefix)).unwrap_or(0)
            }

            fn succ(self) -> Option<Self> {
                self.checked_add(1)
            }

            fn top(self, bits: u32) -> usize {
                (self >> (<$t>::BITS - bits)) as usize
            }
        }
    };
}

impl_key!(u32);
impl_key!(u128);

#[cfg(test)]
mod tests {
    use super::*;

    /// Block ends are right at /0, the full-length prefix and in between.
    #[test]
    fn block_ends() {
        assert_eq!(0u32.last(0), u32::MAX);
        assert_eq!(0x0a00_0000u32.last(8), 0x0aff_ffff);
        assert_eq!(7u32.last(32), 7);
        assert_eq!(0u128.last(0), u128::MAX);
        assert_eq!(1u128.last(128), 1);
        assert_eq!(u32::MAX.succ(), None);
        assert_eq!(0xffff_0000u32.top(16), 0xffff);
        assert_eq!((1u128 << 127).top(1), 1);
    }
}
