//! Sorted, disjoint port-range lists, kept in one arena and chained towards wider blocks.
//!
//! Every address block of a compiled table points at one list: the ports its rules allow plus,
//! usually, those inherited from the blocks around it. Copying every inherited list inward
//! would blow up (a thousand single-port rules on `0.0.0.0/0` copied into every block inside
//! it), so a block copies its parent's list only while that list is short: at most
//! [`INHERIT_MAX`] ranges, or [`COPY_FACTOR`] times the block's own. Otherwise it links `up`
//! to the parent's list and a lookup follows the link. Each list is then at most
//! (1 + [`COPY_FACTOR`]) × own + [`INHERIT_MAX`] ranges, so memory stays linear in the number
//! of rules, and a lookup only takes a link past a list much longer than the one before.
//!
//! A list is stored as `[len, up, range…]` in one `u32` arena, a range packed as
//! `lo << 16 | hi`: a lookup finds the length, the link and the first ranges in one cache
//! line, and packed ranges sort by their low port. Most segments allow one range and link
//! nowhere; [`PortLists::payload`] writes those into the segment itself, which saves a lookup
//! its last cache miss.

use std::collections::HashMap;

/// "No list": no port is allowed.
pub(crate) const NONE: u32 = u32::MAX;

/// Lists this short are always copied into nested blocks.
const INHERIT_MAX: usize = 16;

/// A block copies its parent's list if that is at most this many times its own.
const COPY_FACTOR: usize = 4;

/// Marks a payload that holds one range itself: bits 30..15 the low port, 14..0 how many
/// ports follow it. A low port of 0 (no range starts there) means no port at all. Payloads
/// without the mark are arena offsets.
const INLINE: u32 = 1 << 31;

/// A compiled arena of lists; a list is known by its offset.
#[derive(Debug, Default)]
pub(crate) struct PortLists {
    arena: Vec<u32>,
    lists: usize,
}

impl PortLists {
    /// What a segment with list `list` (or [`NONE`]) stores: the list's single range when it
    /// has one, no link and fewer than 2^15 ports after its first, else the list's offset.
    pub(crate) fn payload(&self, list: u32) -> u32 {
        match self.get(list) {
            None => INLINE,
            Some((&[range], NONE)) if (range & 0xffff) - (range >> 16) < 1 << 15 => {
                INLINE | ((range >> 16) << 15) | ((range & 0xffff) - (range >> 16))
            }
            Some(_) => list,
        }
    }

    /// Whether `port` is allowed by a segment `payload` (see [`PortLists::payload`]): by its
    /// range, or by its list or a list that one links up to.
    pub(crate) fn allows(&self, payload: u32, port: u16) -> bool {
        if payload & INLINE != 0 {
            let lo = (payload >> 15) as u16;
            // Below `lo` the difference wraps past any span, since `lo + span` ≤ 65535.
            return lo != 0 && u32::from(port.wrapping_sub(lo)) <= payload & 0x7fff;
        }
        let mut list = payload;
        // Ranges whose low port is at most `port` pack to at most this.
        let key = (u32::from(port) << 16) | 0xffff;
        // `NONE` is past the end of the arena, so `get` ends the walk; links always point to
        // lists built earlier, so it ends in any case.
        while let Some(&len) = self.arena.get(list as usize) {
            let first = list as usize + 2;
            let ranges = &self.arena[first..first + len as usize];
            let after = ranges.partition_point(|&r| r <= key);
            if after > 0 && port <= ranges[after - 1] as u16 {
                return true;
            }
            list = self.arena[list as usize + 1];
        }
        false
    }

    /// Number of lists.
    pub(crate) fn lists(&self) -> usize {
        self.lists
    }

    /// Number of ranges in all lists.
    pub(crate) fn ranges_stored(&self) -> usize {
        self.arena.len() - 2 * self.lists
    }

    /// The packed ranges and the link of list `list`, if there is one.
    fn get(&self, list: u32) -> Option<(&[u32], u32)> {
        let len = *self.arena.get(list as usize)? as usize;
        let first = list as usize + 2;
        Some((
            &self.arena[first..first + len],
            self.arena[list as usize + 1],
        ))
    }
}

/// Builds the lists of nested blocks, outermost first, sharing equal lists.
#[derive(Debug, Default)]
pub(crate) struct ListBuilder {
    lists: PortLists,
    /// Offset of a stored list by a hash of its record. Sharing only saves memory and lets
    /// neighbouring segments merge, so on a hash collision the newer list simply takes the
    /// slot: no key is ever copied or compared beyond the one candidate.
    interned: HashMap<u64, u32>,
    merged: Vec<u32>,
}

impl ListBuilder {
    /// The list of a block whose own rules allow `own` (packed, sorted, disjoint and
    /// non-adjacent: see [`push_merged`]) and that lies directly inside a block with list
    /// `parent` (or [`NONE`]).
    pub(crate) fn child(&mut self, parent: u32, own: &[u32]) -> u32 {
        let Some((inherited, up)) = self.lists.get(parent) else {
            return self.intern(own, NONE);
        };
        if own.iter().all(|&r| covers(inherited, r)) {
            // Nothing new: the block allows exactly what its parent does.
            return parent;
        }
        if inherited.len() > INHERIT_MAX.max(COPY_FACTOR * own.len()) {
            return self.intern(own, parent);
        }
        let mut merged = std::mem::take(&mut self.merged);
        merged.clear();
        let (mut a, mut b) = (own.iter().peekable(), inherited.iter().peekable());
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) if x <= y => a.next(),
                (Some(_), Some(_)) => b.next(),
                (Some(_), None) => a.next(),
                (None, _) => b.next(),
            };
            match next {
                Some(&r) => push_merged(&mut merged, (r >> 16) as u16, r as u16),
                None => break,
            }
        }
        let list = self.intern(&merged, up);
        self.merged = merged;
        list
    }

    /// The finished arena.
    pub(crate) fn finish(self) -> PortLists {
        self.lists
    }

    fn intern(&mut self, ranges: &[u32], up: u32) -> u32 {
        let hash = record_hash(ranges, up);
        if let Some(&offset) = self.interned.get(&hash)
            && self.lists.get(offset) == Some((ranges, up))
        {
            return offset;
        }
        // 2^31 arena entries would take 8 GiB for a few hundred MiB of rules; offsets stay
        // below `INLINE` (and so below `NONE`).
        let offset = u32::try_from(self.lists.arena.len())
            .ok()
            .filter(|offset| offset & INLINE == 0)
            .expect("arena under 2^31 entries");
        // At most 32,768 disjoint, non-adjacent ranges fit in 1..=65535.
        self.lists.arena.extend([ranges.len() as u32, up]);
        self.lists.arena.extend_from_slice(ranges);
        self.lists.lists += 1;
        self.interned.insert(hash, offset);
        offset
    }
}

/// A fast multiplicative hash of a list record (FxHash's step); the map hashes the result
/// again, so its quality only needs to be good enough to make collisions rare.
fn record_hash(ranges: &[u32], up: u32) -> u64 {
    ranges
        .iter()
        .chain([&up])
        .fold(ranges.len() as u64, |h, &word| {
            (h.rotate_left(5) ^ u64::from(word)).wrapping_mul(0x517c_c1b7_2722_0a95)
        })
}

/// A range `lo..=hi` packed into one word; packed ranges sort by their low port.
pub(crate) fn pack(lo: u16, hi: u16) -> u32 {
    (u32::from(lo) << 16) | u32::from(hi)
}

/// Appends `lo..=hi` to a packed list sorted by low bound, merging it into the last range when
/// they overlap or touch. Ranges must come in order of `lo`.
pub(crate) fn push_merged(list: &mut Vec<u32>, lo: u16, hi: u16) {
    match list.last_mut() {
        Some(last) if u32::from(lo) <= (*last & 0xffff) + 1 => {
            *last = pack((*last >> 16) as u16, (*last as u16).max(hi));
        }
        _ => list.push(pack(lo, hi)),
    }
}

/// Whether one range of the sorted, disjoint, packed `list` holds all of packed `range`.
fn covers(list: &[u32], range: u32) -> bool {
    let after = list.partition_point(|&r| r >> 16 <= range >> 16);
    after > 0 && range as u16 <= list[after - 1] as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Single ranges are stored in the payload exactly when they fit; port 0 never matches.
    #[test]
    fn inline_payloads() {
        let mut builder = ListBuilder::default();
        let cases = [
            (1, 1),
            (1, 32768),
            (1, 32769),
            (65535, 65535),
            (1, 65535),
            (80, 80),
        ];
        let lists: Vec<u32> = cases
            .iter()
            .map(|&(lo, hi)| builder.child(NONE, &[pack(lo, hi)]))
            .collect();
        let arena = builder.finish();
        for (&(lo, hi), &list) in cases.iter().zip(&lists) {
            let payload = arena.payload(list);
            assert_eq!(payload & INLINE != 0, hi - lo < 1 << 15, "{lo}-{hi}");
            for port in [
                0,
                1,
                2,
                lo - 1,
                lo,
                hi,
                hi.wrapping_add(1),
                32768,
                32769,
                65535,
            ] {
                let expected = (lo..=hi).contains(&port);
                assert_eq!(arena.allows(payload, port), expected, "{lo}-{hi} on {port}");
            }
        }
    }

    /// Overlapping and touching ranges merge; separate ones stay apart.
    #[test]
    fn merges_touching_ranges() {
        let mut list = Vec::new();
        for (lo, hi) in [(1, 5), (3, 4), (6, 10), (12, 12), (13, 20), (30, 65535)] {
            push_merged(&mut list, lo, hi);
        }
        assert_eq!(list, [pack(1, 10), pack(12, 20), pack(30, 65535)]);
    }

    /// Short lists are copied into nested blocks; long ones are linked, and lookups follow
    /// the link.
    #[test]
    fn long_lists_are_linked_not_copied() {
        let mut builder = ListBuilder::default();
        let wide: Vec<u32> = (1..=40).map(|p| pack(p * 10, p * 10)).collect();
        let root = builder.child(NONE, &wide);
        let inner = builder.child(root, &[pack(5, 5)]);
        let short = builder.child(NONE, &[pack(80, 80)]);
        let inner_short = builder.child(short, &[pack(443, 443)]);
        let same = builder.child(inner_short, &[pack(80, 80)]);
        let again = builder.child(NONE, &[pack(80, 80)]);
        let lists = builder.finish();
        assert_eq!(same, inner_short);
        assert_eq!(again, short);
        assert_eq!(lists.ranges_stored(), 40 + 1 + 1 + 2);
        assert_eq!(lists.lists(), 4);
        let allows = |list, port| lists.allows(lists.payload(list), port);
        assert!(allows(inner, 5) && allows(inner, 400) && !allows(inner, 6));
        assert!(allows(inner_short, 80) && allows(inner_short, 443));
        assert!(allows(short, 80) && !allows(short, 79) && !allows(short, 81));
        assert!(!allows(NONE, 80) && !allows(NONE, 0));
        assert_eq!(lists.payload(short), INLINE | 80 << 15);
        assert_eq!(lists.payload(inner_short), inner_short);
    }
}
