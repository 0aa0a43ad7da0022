//! The compiled, immutable decision tree and its lookup.
//!
//! A tree is a flat array of 16-byte (IPv4) or 32-byte (IPv6) nodes, with
//! the children of a node side by side. An inner node is either
//! - a binary split: field < threshold goes to `child`, else `child + 1`; or
//! - an equal-width cut: `child + ((field - base) >> shift)`, up to 256
//!   children in one step (HiCuts-style), where the rules allow it cheaply.
//!
//! Either way a step is one dependent load and some integer arithmetic. A
//! leaf points at a run of compact rule copies, sorted by priority, scanned
//! until the first match.
//!
//! Lookups never allocate and never panic: every index is read with `get`,
//! and a missing node (impossible by construction) reads as "no match".

use std::fmt::Debug;

/// Fields of the lookup key, in the order trees index them.
pub const DIMS: usize = 5;
pub const DIM_SRC: usize = 0;
pub const DIM_DST: usize = 1;
pub const DIM_SPORT: usize = 2;
pub const DIM_DPORT: usize = 3;
pub const DIM_PROTO: usize = 4;

/// A leaf's `shift`: 32..=63 for the 64-bit IPv4 path, >= 128 (checked)
/// for IPv6; either way the cut offset is 0.
const LEAF_SHIFT: u8 = 0xff;

/// Key fields are padded to a power of two so `dim & (FIELD_SLOTS - 1)`
/// indexes them without a bounds check.
pub const FIELD_SLOTS: usize = 8;

/// `Node::kind` values.
const KIND_LEAF: u8 = 0;
const KIND_SPLIT: u8 = 1;
const KIND_CUT: u8 = 2;

/// "No match yet": larger than any rule position.
pub const NO_MATCH: u32 = u32::MAX;

/// The integer type addresses (and so every field) are compared in: `u32`
/// for IPv4 trees, `u128` for IPv6 trees.
pub trait AddrWord: Copy + Ord + Default + Debug + Send + Sync + 'static {
    /// Narrows a value known to fit (build time only).
    fn from_u128(value: u128) -> Self;
    /// The value as an index (leaf rule offsets, which fit in 32 bits).
    fn to_index(self) -> usize;
    /// Do `self` and `prefix` agree in their first `len` bits?
    fn prefix_matches(self, prefix: Self, len: u8) -> bool;
    /// `(self - base) >> shift` as a child offset; `self >= base` inside
    /// the node's box, and wrapping keeps it panic-free regardless.
    fn cut_offset(self, base: Self, shift: u8) -> usize;
}

impl AddrWord for u32 {
    fn from_u128(value: u128) -> Self {
        // Build only passes values inside the IPv4 or port space.
        value as u32
    }

    #[inline(always)]
    fn to_index(self) -> usize {
        self as usize
    }

    #[inline(always)]
    fn prefix_matches(self, prefix: Self, len: u8) -> bool {
        let host = u32::MAX.checked_shr(u32::from(len)).unwrap_or(0);
        (self ^ prefix) & !host == 0
    }

    #[inline(always)]
    fn cut_offset(self, base: Self, shift: u8) -> usize {
        // In 64 bits a shift of 32..=63 (a leaf's) yields 0, with no branch.
        (u64::from(self.wrapping_sub(base)) >> (shift & 63)) as usize
    }
}

impl AddrWord for u128 {
    fn from_u128(value: u128) -> Self {
        value
    }

    #[inline(always)]
    fn to_index(self) -> usize {
        // Only ever holds leaf offsets, which are below 2^32.
        self as usize
    }

    #[inline(always)]
    fn prefix_matches(self, prefix: Self, len: u8) -> bool {
        let host = u128::MAX.checked_shr(u32::from(len)).unwrap_or(0);
        (self ^ prefix) & !host == 0
    }

    #[inline(always)]
    fn cut_offset(self, base: Self, shift: u8) -> usize {
        // At most 256 children: the offset fits any usize.
        (self
            .wrapping_sub(base)
            .checked_shr(u32::from(shift))
            .unwrap_or(0)) as usize
    }
}

/// One tree node: a leaf, a binary split or an equal-width cut.
#[derive(Clone, Copy, Debug, Default)]
pub struct Node<A> {
    /// Split: keys with field >= threshold go right. Cut: the base the
    /// field is measured from. Leaf: index of the first rule copy in
    /// `Tree::leaf_rules`.
    pub threshold: A,
    /// Inner: index of the first child. Leaf: the leaf's own index, so a
    /// step from a leaf stays on it (lock-step lookups need no branch).
    pub child: u32,
    /// Leaf: number of rule copies.
    pub len: u32,
    pub dim: u8,
    /// Cut: log2 of the width of each child's slice of the field. Leaf:
    /// `LEAF_SHIFT`, past any word, so the step offset is 0.
    pub shift: u8,
    pub kind: u8,
}

impl<A: AddrWord> Node<A> {
    /// A leaf at node index `own_index` over rule copies
    /// `start..start + len`. Its step offset is always 0 (a shift past the
    /// word), so stepping from a leaf returns to it.
    pub fn leaf(own_index: u32, start: u32, len: u32) -> Self {
        Self {
            threshold: A::from_u128(start.into()),
            child: own_index,
            len,
            dim: 0,
            shift: LEAF_SHIFT,
            kind: KIND_LEAF,
        }
    }

    pub fn split(dim: usize, threshold: A, child: u32) -> Self {
        Self {
            threshold,
            child,
            len: 0,
            dim: dim as u8,
            shift: 0,
            kind: KIND_SPLIT,
        }
    }

    pub fn cut(dim: usize, base: A, shift: u8, child: u32) -> Self {
        Self {
            threshold: base,
            child,
            len: 0,
            dim: dim as u8,
            shift,
            kind: KIND_CUT,
        }
    }

    #[inline(always)]
    fn is_leaf(&self) -> bool {
        self.kind == KIND_LEAF
    }

    /// Index of the node `fields` steps to (a leaf steps to itself).
    /// Both offsets are computed and one is selected arithmetically: which
    /// kind of node comes next is unpredictable, so a branch would miss.
    #[inline(always)]
    fn next(&self, fields: &[A; FIELD_SLOTS]) -> usize {
        let value = fields[usize::from(self.dim) & (FIELD_SLOTS - 1)];
        let cut = value.cut_offset(self.threshold, self.shift);
        let split = usize::from(value >= self.threshold);
        let take_split = usize::from(self.kind == KIND_SPLIT).wrapping_neg();
        self.child as usize + (cut ^ ((cut ^ split) & take_split))
    }

    /// A leaf's rule copies: `start..start + len`.
    #[inline(always)]
    fn leaf_range(&self) -> std::ops::Range<usize> {
        let start = self.threshold.to_index();
        start..start + self.len as usize
    }
}

/// A rule as a leaf stores it: everything a match needs, and its position
/// (priority). Addresses are prefixes (address and length), which makes an
/// IPv4 copy 24 bytes and an IPv6 copy 48.
#[derive(Clone, Copy, Debug, Default)]
pub struct LeafRule<A> {
    pub src: A,
    pub dst: A,
    pub position: u32,
    pub sport_lo: u16,
    pub sport_hi: u16,
    pub dport_lo: u16,
    pub dport_hi: u16,
    pub src_len: u8,
    pub dst_len: u8,
    pub proto: u8,
    pub proto_any: bool,
}

impl<A: AddrWord> LeafRule<A> {
    /// Branch-free: every comparison is evaluated and combined with `&`,
    /// because which rule of a leaf matches is unpredictable and a
    /// short-circuit chain mispredicts on nearly every rule.
    #[inline(always)]
    fn matches(&self, key: &[A; FIELD_SLOTS], ports: (u16, u16), proto: u8) -> bool {
        key[DIM_SRC].prefix_matches(self.src, self.src_len)
            & key[DIM_DST].prefix_matches(self.dst, self.dst_len)
            & (self.sport_lo <= ports.0)
            & (ports.0 <= self.sport_hi)
            & (self.dport_lo <= ports.1)
            & (ports.1 <= self.dport_hi)
            & (self.proto_any | (self.proto == proto))
    }
}

/// One decision tree over one partition of the rules.
#[derive(Clone, Debug, Default)]
pub struct Tree<A> {
    pub nodes: Vec<Node<A>>,
    pub leaf_rules: Vec<LeafRule<A>>,
    /// The smallest rule position in the tree: if a better match is already
    /// known, the tree need not be searched.
    pub min_position: u32,
    /// Rules in the partition the tree was built from.
    pub rules: usize,
    pub depth: usize,
}

/// A key split into the tree's fields.
#[derive(Clone, Copy, Debug)]
pub struct TreeKey<A> {
    /// The `DIMS` fields, then zero padding.
    pub fields: [A; FIELD_SLOTS],
    pub ports: (u16, u16),
    pub proto: u8,
}

impl<A: AddrWord> Tree<A> {
    /// Index of the leaf node for `key`.
    #[inline(always)]
    fn descend(&self, fields: &[A; FIELD_SLOTS]) -> Option<&Node<A>> {
        let mut node = self.nodes.first()?;
        while !node.is_leaf() {
            node = self.nodes.get(node.next(fields))?;
        }
        Some(node)
    }

    /// The first position matching `key` in `leaf`, if below `best`.
    #[inline(always)]
    fn scan_leaf(&self, leaf: &Node<A>, key: &TreeKey<A>, best: u32) -> u32 {
        let rules = self.leaf_rules.get(leaf.leaf_range()).unwrap_or_default();
        for rule in rules {
            if rule.position >= best {
                break;
            }
            if rule.matches(&key.fields, key.ports, key.proto) {
                return rule.position;
            }
        }
        best
    }

    /// The best (lowest) matching position, or `best` if none is lower.
    #[inline]
    pub fn lookup(&self, key: &TreeKey<A>, best: u32) -> u32 {
        match self.descend(&key.fields) {
            Some(leaf) => self.scan_leaf(leaf, key, best),
            None => best,
        }
    }

    /// `lookup` for several keys at once, branch-free: every lane takes
    /// exactly `depth` steps (a lane at a leaf stays there, by a conditional
    /// move), so the loop has no unpredictable exits and the loads of the
    /// lanes are independent: the CPU overlaps their cache misses.
    #[inline]
    pub fn lookup_lanes<const N: usize>(&self, keys: &[TreeKey<A>; N], best: &mut [u32; N]) {
        if best.iter().all(|b| *b <= self.min_position) || self.nodes.is_empty() {
            return;
        }
        let mut at = [0usize; N];
        for _ in 0..self.depth {
            for lane in 0..N {
                at[lane] = self.node(at[lane]).next(&keys[lane].fields);
            }
        }
        for lane in 0..N {
            let leaf = self.node(at[lane]);
            if leaf.is_leaf() {
                best[lane] = self.scan_leaf(leaf, &keys[lane], best[lane]);
            }
        }
    }

    /// The node at `index`, or the root if out of range (impossible by
    /// construction; the root keeps the lookup panic-free and harmless).
    #[inline(always)]
    fn node(&self, index: usize) -> &Node<A> {
        match self.nodes.get(index) {
            Some(node) => node,
            None => &self.nodes[0],
        }
    }

    /// Work one lookup does here: (node steps, rule copies compared).
    pub fn lookup_work(&self, key: &TreeKey<A>, best: u32) -> (usize, usize) {
        let mut steps = 0;
        let Some(mut node) = self.nodes.first() else {
            return (0, 0);
        };
        while !node.is_leaf() {
            steps += 1;
            match self.nodes.get(node.next(&key.fields)) {
                Some(next) => node = next,
                None => return (steps, 0),
            }
        }
        let rules = self.leaf_rules.get(node.leaf_range()).unwrap_or_default();
        let mut compared = 0;
        for rule in rules {
            if rule.position >= best {
                break;
            }
            compared += 1;
            if rule.matches(&key.fields, key.ports, key.proto) {
                break;
            }
        }
        (steps, compared)
    }

    /// Rule copies in the largest leaf.
    pub fn max_leaf(&self) -> usize {
        self.nodes
            .iter()
            .filter(|n| n.is_leaf())
            .map(|n| n.len as usize)
            .max()
            .unwrap_or(0)
    }

    /// Bytes of nodes and leaf rule copies.
    pub fn memory_bytes(&self) -> usize {
        self.nodes.len() * std::mem::size_of::<Node<A>>()
            + self.leaf_rules.len() * std::mem::size_of::<LeafRule<A>>()
    }
}
