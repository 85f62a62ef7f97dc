//! The compiled rules of one address family: the address space cut into segments, each
//! pointing at the list of ports its addresses may reach.
//!
//! CIDR blocks nest or are disjoint, so sorting them by (start, prefix) walks them as a tree,
//! outermost first. One sweep with a stack of open blocks cuts the space into segments at
//! every block start and end and hands each segment the list of its innermost block (see
//! [`portlist`](crate::portlist) for how lists inherit from outer blocks). Neighbouring
//! segments with the same list are one segment.
//!
//! A lookup finds the segment with a bucket index on the top bits of the address and a
//! binary search inside the bucket, then searches the segment's port list: no allocation.

use std::fmt;

use crate::key::Key;
use crate::portlist::{ListBuilder, NONE, PortLists, push_merged};

/// One rule restricted to one family, before compiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Block<K> {
    /// First address; host bits are clear.
    pub(crate) start: K,
    /// Prefix length.
    pub(crate) prefix: u8,
    /// Lowest port.
    pub(crate) lo: u16,
    /// Highest port.
    pub(crate) hi: u16,
}

/// Most bits of an address the bucket index uses: 2^16 + 1 entries, 256 KiB.
const INDEX_BITS_MAX: u32 = 16;

/// The compiled rules of one family.
pub(crate) struct Table<K> {
    /// First address and port payload (a list or its one range) of each segment, by address;
    /// the first starts at zero. Side by side, so the search ends on the cache line that
    /// holds the payload.
    segments: Box<[(K, u32)]>,
    /// For each value of the top `bits` bits, the first segment that starts at or after it;
    /// one more entry holds the number of segments.
    index: Box<[u32]>,
    bits: u32,
    ports: PortLists,
}

impl<K: Key> Table<K> {
    /// Compiles the blocks of one family.
    pub(crate) fn compile(mut blocks: Vec<Block<K>>) -> Table<K> {
        blocks.sort_unstable();
        let mut lists = ListBuilder::default();
        let mut segments = Segments::default();
        // Blocks that contain the current position, outermost first: (last address, list).
        let mut open: Vec<(K, u32)> = Vec::new();
        // The first address without a segment yet; `None` once the space is covered.
        let mut cursor = Some(K::ZERO);
        let mut own = Vec::new();
        let mut rest = blocks.as_slice();
        while let Some(first) = rest.first() {
            let (start, prefix) = (first.start, first.prefix);
            // Rules on the same block were sorted by low port, ready to merge.
            let same = rest
                .iter()
                .take_while(|b| b.start == start && b.prefix == prefix)
                .count();
            own.clear();
            for block in &rest[..same] {
                push_merged(&mut own, block.lo, block.hi);
            }
            rest = &rest[same..];

            while let Some(&(last, list)) = open.last() {
                if last >= start {
                    break;
                }
                segments.cover(&mut cursor, last, list);
                open.pop();
            }
            let parent = open.last().map_or(NONE, |&(_, list)| list);
            if let Some(at) = cursor
                && at < start
            {
                segments.push(at, parent);
            }
            cursor = Some(start);
            open.push((start.last(prefix), lists.child(parent, &own)));
        }
        while let Some((last, list)) = open.pop() {
            segments.cover(&mut cursor, last, list);
        }
        if let Some(at) = cursor {
            segments.push(at, NONE);
        }
        Table::index(segments, lists.finish())
    }

    fn index(segments: Segments<K>, ports: PortLists) -> Table<K> {
        let segments: Box<[(K, u32)]> = segments
            .0
            .into_iter()
            .map(|(start, list)| (start, ports.payload(list)))
            .collect();
        // About one segment per bucket.
        let bits = (usize::BITS - segments.len().leading_zeros()).clamp(1, INDEX_BITS_MAX);
        // Segments number at most twice the rules plus one, so their positions fit in u32.
        let mut index = Vec::with_capacity((1 << bits) + 1);
        for (i, segment) in segments.iter().enumerate() {
            // Every bucket up to this segment's, not yet started, starts here.
            index.resize(index.len().max(segment.0.top(bits) + 1), i as u32);
        }
        index.resize((1 << bits) + 1, segments.len() as u32);
        Table {
            segments,
            index: index.into_boxed_slice(),
            bits,
            ports,
        }
    }

    /// Whether a rule allows `addr` on `port`.
    pub(crate) fn allows(&self, addr: K, port: u16) -> bool {
        let bucket = addr.top(self.bits);
        let (lo, hi) = (self.index[bucket] as usize, self.index[bucket + 1] as usize);
        // The segment holding `addr` is the last one starting at or before it. It is at
        // `lo - 1` or later: in bucket 0, segment 0 starts at zero, so the search counts it;
        // in later buckets segment 0 starts before the bucket, so `lo` is at least 1.
        let segment = lo + self.segments[lo..hi].partition_point(|s| s.0 <= addr) - 1;
        self.ports.allows(self.segments[segment].1, port)
    }

    /// Number of segments.
    pub(crate) fn segments(&self) -> usize {
        self.segments.len()
    }
}

impl<K: Key> fmt::Debug for Table<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Table")
            .field("segments", &self.segments())
            .field("port_lists", &self.ports.lists())
            .field("port_ranges", &self.ports.ranges_stored())
            .field("index_bits", &self.bits)
            .finish()
    }
}

/// Segments in address order, (start, list); a segment runs up to the next one's start.
struct Segments<K>(Vec<(K, u32)>);

impl<K> Default for Segments<K> {
    fn default() -> Segments<K> {
        Segments(Vec::new())
    }
}

impl<K: Key> Segments<K> {
    /// Starts a segment with `list` at `start`, or extends the last one if it has that list.
    fn push(&mut self, start: K, list: u32) {
        if self.0.last().map(|s| s.1) != Some(list) {
            self.0.push((start, list));
        }
    }

    /// Gives `cursor..=last` to `list` (if the cursor is not past `last`) and moves the
    /// cursor after it.
    fn cover(&mut self, cursor: &mut Option<K>, last: K, list: u32) {
        if let Some(at) = *cursor
            && at <= last
        {
            self.push(at, list);
            *cursor = last.succ();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(start: u32, prefix: u8, lo: u16, hi: u16) -> Block<u32> {
        Block {
            start,
            prefix,
            lo,
            hi,
        }
    }

    /// Nested blocks cut the space into segments, and neighbours with equal lists merge.
    #[test]
    fn segments_of_nested_blocks() {
        let table = Table::compile(vec![
            block(0x0a00_0000, 8, 80, 80),
            block(0x0a01_0000, 16, 443, 443),
            block(0x0a01_0000, 24, 80, 80), // adds nothing to its /16
            block(0x0b00_0000, 32, 22, 22),
            block(0x0b00_0001, 32, 22, 22), // same list as its neighbour
        ]);
        // 0, 10/8, 10.1/16, 10.2.. (back to 10/8), gap, 11.0.0.0-1, gap.
        assert_eq!(table.segments(), 6, "{table:?}");
        assert!(table.allows(0x0a01_0203, 443) && table.allows(0x0a01_0203, 80));
        assert!(!table.allows(0x0a02_0000, 443) && table.allows(0x0aff_ffff, 80));
        assert!(table.allows(0x0b00_0001, 22) && !table.allows(0x0b00_0002, 22));
        assert!(!table.allows(0x09ff_ffff, 80) && !table.allows(0x0b00_0000, 80));
    }

    /// Blocks that reach the last address close without overflowing the cursor.
    #[test]
    fn blocks_at_the_end_of_the_space() {
        let table = Table::compile(vec![
            block(0, 0, 1, 1),
            block(0xffff_ff00, 24, 2, 2),
            block(0xffff_ffff, 32, 3, 3),
        ]);
        assert!(table.allows(u32::MAX, 3) && table.allows(u32::MAX, 2));
        assert!(table.allows(u32::MAX, 1) && table.allows(0, 1));
        assert!(!table.allows(0xffff_fffe, 3) && table.allows(0xffff_fffe, 2));
        let empty = Table::<u128>::compile(Vec::new());
        assert!(!empty.allows(0, 1) && !empty.allows(u128::MAX, 65535));
    }
}
