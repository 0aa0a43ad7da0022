//! Off-path construction of the decision trees.
//!
//! 1. Rules are partitioned by shape (see `partition`); each partition
//!    becomes one tree.
//! 2. A tree is built top-down in the HyperSplit manner: at each
//!    node, over every field and every rule edge inside the node's box, take
//!    the split point that minimises the larger side (then the total).
//! 3. Redundancy pruning: when a rule covers the node's whole box, no rule
//!    after it can ever win inside that box, so they are dropped there. This
//!    collapses duplicate and shadowed rules.
//! 4. Where rules allow, a node is an equal-width cut into up to 2^8
//!    children instead (HiCuts): one step of the lookup then does the work
//!    of several binary levels. A cut is taken when its largest child is
//!    smaller than the best binary split's larger side, and its rule copies
//!    stay within `space_factor` times the node's rules (this bounds
//!    replication and memory).
//! 5. A node with at most `leaf_size` rules (or nothing that shrinks it)
//!    becomes a leaf of compact rule copies.

use super::tree::{
    AddrWord, LeafRule, Node, Tree, DIMS, DIM_DPORT, DIM_DST, DIM_PROTO, DIM_SPORT, DIM_SRC,
};
use super::Rule;
use crate::packet::AddrFamily;

/// Tuning of the build; the defaults are what `docs/benchmarks.md` measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BuildConfig {
    /// Most rules in a leaf.
    pub leaf_size: usize,
    /// A prefix is "small" (narrow) when it fixes at least this many bits.
    /// Absolute, not a fraction of the address: real IPv6 prefixes are
    /// /16 to /128, so a fraction would call every IPv6 subnet "large".
    pub small_prefix_bits: u8,
    /// Most rule copies a tree may hold per rule; a partition that needs
    /// more is split in two by position and each half built on its own.
    pub max_copies_per_rule: usize,
    /// Most candidate split points examined per field and node (evenly
    /// sampled beyond that), which bounds build time on 100k sets.
    pub max_candidates: usize,
    /// Deepest a tree may grow.
    pub max_depth: usize,
    /// Keys sampled to decide which partitions share a tree (0: never merge).
    pub merge_samples: usize,
    /// Most rules the search for that grouping builds trees of: a larger
    /// family is searched on an evenly spaced subset of this many rules,
    /// then the grouping found is built in full (0: search on every rule).
    pub search_rules: usize,
    /// Most children of a cut, as a power of two (0 disables cuts).
    pub max_cut_bits: u8,
    /// A cut's children may hold, with one per child added, at most this
    /// many rule copies per rule of the node (HiCuts' space factor).
    pub space_factor: usize,
    /// Threads that build independent trees at once (1: the calling
    /// thread only). The trees are the same whatever the count.
    pub threads: usize,
}

impl Default for BuildConfig {
    fn default() -> Self {
        Self {
            leaf_size: 4,
            small_prefix_bits: 8,
            max_copies_per_rule: 32,
            max_candidates: 512,
            max_depth: 64,
            merge_samples: 2000,
            search_rules: 2048,
            max_cut_bits: 8,
            space_factor: 4,
            threads: 1,
        }
    }
}

type Range = (u128, u128);

/// A rule reduced to inclusive ranges per field, with its position.
#[derive(Clone, Copy, Debug)]
pub struct BuildRule {
    pub ranges: [Range; DIMS],
    /// Source and destination prefix lengths (the address ranges above are
    /// those prefixes).
    pub prefix_lens: (u8, u8),
    pub position: u32,
}

impl BuildRule {
    pub fn from_rule<T>(position: u32, rule: &Rule<T>) -> Self {
        let mut ranges = [(0, 0); DIMS];
        ranges[DIM_SRC] = rule.src.bounds();
        ranges[DIM_DST] = rule.dst.bounds();
        ranges[DIM_SPORT] = (rule.src_ports.lo().into(), rule.src_ports.hi().into());
        ranges[DIM_DPORT] = (rule.dst_ports.lo().into(), rule.dst_ports.hi().into());
        ranges[DIM_PROTO] = rule.proto.map_or((0, 255), |p| (p.into(), p.into()));
        Self {
            ranges,
            prefix_lens: (rule.src.len(), rule.dst.len()),
            position,
        }
    }

    fn covers(&self, bbox: &[Range; DIMS]) -> bool {
        self.ranges
            .iter()
            .zip(bbox)
            .all(|(r, b)| r.0 <= b.0 && r.1 >= b.1)
    }
}

/// The full key space of a family: every field's range.
pub fn universe(family: AddrFamily) -> [Range; DIMS] {
    let addr_max = if family == AddrFamily::V4 {
        u128::from(u32::MAX)
    } else {
        u128::MAX
    };
    let mut bbox = [(0, 0); DIMS];
    bbox[DIM_SRC] = (0, addr_max);
    bbox[DIM_DST] = (0, addr_max);
    bbox[DIM_SPORT] = (0, u16::MAX.into());
    bbox[DIM_DPORT] = (0, u16::MAX.into());
    bbox[DIM_PROTO] = (0, 255);
    bbox
}

/// Builds one tree over `rules` (sorted by position) in the key space
/// `bbox`; `None` if it would hold more than `budget` rule copies.
pub fn build_tree<A: AddrWord>(
    rules: &[BuildRule],
    bbox: [Range; DIMS],
    config: &BuildConfig,
    budget: Option<usize>,
) -> Option<Tree<A>> {
    let mut builder = Builder::<A> {
        rules,
        config,
        budget: budget.unwrap_or(usize::MAX),
        tree: Tree {
            nodes: vec![Node::default()],
            leaf_rules: Vec::new(),
            min_position: rules.first().map_or(u32::MAX, |r| r.position),
            rules: rules.len(),
            depth: 0,
        },
    };
    let all: Vec<u32> = (0..rules.len() as u32).collect();
    builder.build(0, all, bbox, 0);
    (builder.tree.leaf_rules.len() <= builder.budget).then_some(builder.tree)
}

struct Builder<'a, A> {
    rules: &'a [BuildRule],
    config: &'a BuildConfig,
    /// Rule copies allowed; past it the build gives up.
    budget: usize,
    tree: Tree<A>,
}

/// A chosen split: field, threshold (first value of the right side), and
/// the sizes of the two sides.
struct Split {
    dim: usize,
    at: u128,
    larger: usize,
    total: usize,
}

/// A chosen equal-width cut: field, log2 of each child's width, number of
/// children, and the largest child's size.
struct Cut {
    dim: usize,
    shift: u32,
    children: usize,
    larger: usize,
    total: usize,
}

/// Bits needed to write `x` (0 for 0).
fn bit_len(x: u128) -> u32 {
    128 - x.leading_zeros()
}

/// The slice `[lo, hi]` of child `i` of a cut of `bbox_dim` by `shift`.
fn cut_child_range((box_lo, box_hi): Range, shift: u32, i: usize) -> Range {
    let width_mask = if shift >= 128 {
        u128::MAX
    } else {
        (1u128 << shift) - 1
    };
    let lo = box_lo.saturating_add((i as u128).checked_shl(shift).unwrap_or(u128::MAX));
    (lo, lo.saturating_add(width_mask).min(box_hi))
}

/// Which children of a cut a range falls in.
fn cut_children_of((lo, hi): Range, (box_lo, box_hi): Range, shift: u32) -> (usize, usize) {
    let first = (lo.max(box_lo) - box_lo).checked_shr(shift).unwrap_or(0);
    let last = (hi.min(box_hi) - box_lo).checked_shr(shift).unwrap_or(0);
    (first as usize, last as usize)
}

impl<A: AddrWord> Builder<'_, A> {
    fn rule(&self, i: u32) -> &BuildRule {
        &self.rules[i as usize]
    }

    fn build(&mut self, slot: usize, mut set: Vec<u32>, bbox: [Range; DIMS], depth: usize) {
        if self.tree.leaf_rules.len() > self.budget {
            return;
        }
        self.tree.depth = self.tree.depth.max(depth);
        // Redundancy pruning: nothing after a box-covering rule can win here.
        if let Some(cover) = set.iter().position(|&i| self.rule(i).covers(&bbox)) {
            set.truncate(cover + 1);
        }
        if set.len() <= self.config.leaf_size || depth >= self.config.max_depth {
            self.make_leaf(slot, &set);
            return;
        }
        // A binary split's larger side is at least half the rules, so a cut
        // below that wins without searching for the split (and its sorts).
        let cut = self.best_cut(&set, &bbox);
        let half = set.len().div_ceil(2);
        let split = match &cut {
            Some(cut) if cut.larger < half => None,
            _ => self.best_split(&set, &bbox),
        };
        match (split, cut) {
            (split, Some(cut)) if split.as_ref().is_none_or(|s| cut.larger < s.larger) => {
                self.make_cut(slot, set, bbox, depth, cut)
            }
            (Some(split), _) => self.make_split(slot, set, bbox, depth, split),
            (None, _) => self.make_leaf(slot, &set),
        }
    }

    fn make_cut(
        &mut self,
        slot: usize,
        set: Vec<u32>,
        bbox: [Range; DIMS],
        depth: usize,
        cut: Cut,
    ) {
        let child = self.tree.nodes.len();
        self.tree
            .nodes
            .resize(child + cut.children, Node::default());
        let base = A::from_u128(bbox[cut.dim].0);
        self.tree.nodes[slot] = Node::cut(cut.dim, base, cut.shift as u8, child as u32);
        let mut sets: Vec<Vec<u32>> = vec![Vec::new(); cut.children];
        for &i in &set {
            let (first, last) =
                cut_children_of(self.rule(i).ranges[cut.dim], bbox[cut.dim], cut.shift);
            for child_set in &mut sets[first..=last.min(cut.children - 1)] {
                child_set.push(i);
            }
        }
        drop(set);
        for (i, child_set) in sets.into_iter().enumerate() {
            let mut child_box = bbox;
            child_box[cut.dim] = cut_child_range(bbox[cut.dim], cut.shift, i);
            self.build(child + i, child_set, child_box, depth + 1);
        }
    }

    fn make_split(
        &mut self,
        slot: usize,
        set: Vec<u32>,
        bbox: [Range; DIMS],
        depth: usize,
        split: Split,
    ) {
        let child = self.tree.nodes.len();
        self.tree.nodes.push(Node::default());
        self.tree.nodes.push(Node::default());
        self.tree.nodes[slot] = Node::split(split.dim, A::from_u128(split.at), child as u32);

        let (left, right): (Vec<u32>, Vec<u32>) = (
            set.iter()
                .copied()
                .filter(|&i| self.rule(i).ranges[split.dim].0 < split.at)
                .collect(),
            set.iter()
                .copied()
                .filter(|&i| self.rule(i).ranges[split.dim].1 >= split.at)
                .collect(),
        );
        drop(set);
        let mut left_box = bbox;
        left_box[split.dim].1 = split.at - 1;
        let mut right_box = bbox;
        right_box[split.dim].0 = split.at;
        self.build(child, left, left_box, depth + 1);
        self.build(child + 1, right, right_box, depth + 1);
    }

    fn make_leaf(&mut self, slot: usize, set: &[u32]) {
        let start = self.tree.leaf_rules.len() as u32;
        for &i in set {
            let r = self.rule(i);
            let [src, dst, sport, dport, proto] = r.ranges;
            self.tree.leaf_rules.push(LeafRule {
                src: A::from_u128(src.0),
                dst: A::from_u128(dst.0),
                position: r.position,
                sport_lo: sport.0 as u16,
                sport_hi: sport.1 as u16,
                dport_lo: dport.0 as u16,
                dport_hi: dport.1 as u16,
                src_len: r.prefix_lens.0,
                dst_len: r.prefix_lens.1,
                proto: proto.0 as u8,
                proto_any: proto != (proto.0, proto.0),
            });
        }
        self.tree.nodes[slot] = Node::leaf(slot as u32, start, set.len() as u32);
    }

    /// The equal-width cut with the smallest largest child within the space
    /// budget, over all fields and 2..=2^max_cut_bits children.
    fn best_cut(&self, set: &[u32], bbox: &[Range; DIMS]) -> Option<Cut> {
        let n = set.len();
        let mut best: Option<Cut> = None;
        let mut counts: Vec<i64> = Vec::new();
        // Each rule's clipped range as offsets from the box's low end,
        // gathered once per field so the loops below read sequentially.
        let mut offsets: Vec<(u128, u128)> = Vec::with_capacity(n);
        for (dim, &(box_lo, box_hi)) in bbox.iter().enumerate() {
            let width_bits = bit_len(box_hi - box_lo);
            offsets.clear();
            offsets.extend(set.iter().map(|&i| {
                let (lo, hi) = self.rule(i).ranges[dim];
                (lo.max(box_lo) - box_lo, hi.min(box_hi) - box_lo)
            }));
            for bits in 1..=u32::from(self.config.max_cut_bits).min(width_bits) {
                let shift = width_bits - bits;
                let children = ((box_hi - box_lo) >> shift) as usize + 1;
                counts.clear();
                counts.resize(children + 1, 0);
                for &(lo, hi) in &offsets {
                    counts[(lo >> shift) as usize] += 1;
                    counts[((hi >> shift) as usize + 1).min(children)] -= 1;
                }
                let (mut running, mut larger, mut total) = (0i64, 0usize, 0usize);
                for &c in &counts[..children] {
                    running += c;
                    larger = larger.max(running as usize);
                    total += running as usize;
                }
                if total + children > self.config.space_factor * n {
                    break; // finer cuts on this field only replicate more
                }
                let better = best
                    .as_ref()
                    .is_none_or(|b| (larger, total) < (b.larger, b.total));
                if larger < n && better {
                    best = Some(Cut {
                        dim,
                        shift,
                        children,
                        larger,
                        total,
                    });
                }
            }
        }
        best
    }

    /// The split that minimises the larger side, over all fields; `None` if
    /// no split makes both sides smaller than the node.
    fn best_split(&self, set: &[u32], bbox: &[Range; DIMS]) -> Option<Split> {
        let n = set.len();
        let mut best: Option<Split> = None;
        let mut los = Vec::with_capacity(n);
        let mut his = Vec::with_capacity(n);
        let mut candidates = Vec::with_capacity(2 * n);
        for (dim, &(box_lo, box_hi)) in bbox.iter().enumerate() {
            if box_lo == box_hi {
                continue;
            }
            los.clear();
            his.clear();
            candidates.clear();
            for &i in set {
                let (lo, hi) = self.rule(i).ranges[dim];
                let (lo, hi) = (lo.max(box_lo), hi.min(box_hi));
                los.push(lo);
                his.push(hi);
                if lo > box_lo {
                    candidates.push(lo);
                }
                if hi < box_hi {
                    candidates.push(hi + 1);
                }
            }
            if candidates.is_empty() {
                continue;
            }
            los.sort_unstable();
            his.sort_unstable();
            candidates.sort_unstable();
            candidates.dedup();
            let step = candidates.len().div_ceil(self.config.max_candidates).max(1);
            for &at in candidates.iter().step_by(step) {
                let left = los.partition_point(|&lo| lo < at);
                let right = n - his.partition_point(|&hi| hi < at);
                let split = Split {
                    dim,
                    at,
                    larger: left.max(right),
                    total: left + right,
                };
                let better = best
                    .as_ref()
                    .is_none_or(|b| (split.larger, split.total) < (b.larger, b.total));
                if better {
                    best = Some(split);
                }
            }
        }
        best.filter(|b| b.larger < n)
    }
}
