//! 5-tuple packet classification: first matching rule wins.
//!
//! Two classifiers with one contract: [`LinearClassifier`], the reference
//! (the oracle every change is diffed against), and [`Classifier`], rules
//! compiled off the packet path into immutable decision trees (see `build`
//! for how, `tree` for the lookup). `classify` never allocates and never
//! panics; `classify_batch` overlaps the memory latency of several keys.
//!
//! IPv4 and IPv6 rules live in separate forests (a rule's prefixes share one
//! family), so IPv4 lookups compare 32-bit words. A key only ever matches
//! rules of its own family.

mod build;
pub mod classbench;
mod partition;
mod rng;
mod rule;
mod tree;

#[cfg(test)]
mod tests;

pub use build::BuildConfig;
pub use rule::{family_bits, IpPrefix, PortRange, Rule, RuleError};

use build::{universe, BuildRule};
use partition::ForestPlan;
use tree::{AddrWord, Tree, TreeKey, NO_MATCH};

use crate::packet::{AddrFamily, FlowKey};

/// Why a rule list cannot be compiled.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("rule {position} (id {id}): source is {src:?} but destination is {dst:?}")]
    FamilyMismatch {
        position: usize,
        id: u32,
        src: AddrFamily,
        dst: AddrFamily,
    },
    #[error("{count} rules exceed the limit of {max}")]
    TooManyRules { count: usize, max: usize },
}

/// Most rules one classifier holds (positions must stay below `NO_MATCH`).
pub const MAX_RULES: usize = 1 << 24;

/// The reference classifier: a linear scan in rule order.
#[derive(Clone, Debug)]
pub struct LinearClassifier<T> {
    rules: Vec<Rule<T>>,
}

impl<T> LinearClassifier<T> {
    pub fn new(rules: Vec<Rule<T>>) -> Self {
        Self { rules }
    }

    /// Position of the first rule matching `key`.
    pub fn classify(&self, key: &FlowKey) -> Option<u32> {
        self.rules
            .iter()
            .position(|r| r.matches(key))
            .map(|p| p as u32)
    }

    pub fn rules(&self) -> &[Rule<T>] {
        &self.rules
    }
}

/// Size and shape of a compiled classifier.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassifierStats {
    pub rules: usize,
    pub trees: usize,
    pub nodes: usize,
    /// Rule copies in leaves (replication = leaf_rules / rules).
    pub leaf_rules: usize,
    /// Deepest tree, in inner nodes from root to leaf.
    pub max_depth: usize,
    /// Bytes of tree nodes and leaf rule copies (not the rule list itself).
    pub memory_bytes: usize,
}

/// Work done by one lookup.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LookupWork {
    pub trees: usize,
    pub steps: usize,
    pub compared: usize,
}

/// Shape of one tree, for tuning and docs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TreeStats {
    pub min_position: u32,
    pub rules: usize,
    pub nodes: usize,
    pub leaf_rules: usize,
    pub depth: usize,
    /// Rule copies in the largest leaf.
    pub max_leaf: usize,
    pub memory_bytes: usize,
}

/// Trees of one address family, ordered by the best position they hold.
#[derive(Clone, Debug, Default)]
struct Forest<A> {
    trees: Vec<Tree<A>>,
}

/// Keys classified together by `classify_batch`.
const LANES: usize = 8;

impl<A: AddrWord> Forest<A> {
    fn build(
        family: AddrFamily,
        rules: &[BuildRule],
        config: &BuildConfig,
        previous: Option<&ForestPlan>,
    ) -> (Self, ForestPlan) {
        let (trees, plan) = partition::build_forest(rules, universe(family), config, previous);
        (Self { trees }, plan)
    }

    #[inline]
    fn lookup(&self, key: &TreeKey<A>) -> u32 {
        let mut best = NO_MATCH;
        for tree in &self.trees {
            if tree.min_position >= best {
                break;
            }
            best = tree.lookup(key, best);
        }
        best
    }

    #[inline]
    fn lookup_lanes(&self, keys: &[TreeKey<A>; LANES], best: &mut [u32; LANES]) {
        for tree in &self.trees {
            tree.lookup_lanes(keys, best);
        }
    }

    fn lookup_work(&self, key: &TreeKey<A>) -> LookupWork {
        let mut work = LookupWork::default();
        let mut best = NO_MATCH;
        for tree in &self.trees {
            if tree.min_position >= best {
                break;
            }
            let (steps, compared) = tree.lookup_work(key, best);
            work.trees += 1;
            work.steps += steps;
            work.compared += compared;
            best = tree.lookup(key, best);
        }
        work
    }

    fn tree_stats(&self) -> impl Iterator<Item = TreeStats> + '_ {
        self.trees.iter().map(|t| TreeStats {
            min_position: t.min_position,
            rules: t.rules,
            nodes: t.nodes.len(),
            leaf_rules: t.leaf_rules.len(),
            depth: t.depth,
            max_leaf: t.max_leaf(),
            memory_bytes: t.memory_bytes(),
        })
    }

    fn add_stats(&self, stats: &mut ClassifierStats) {
        for tree in &self.trees {
            stats.trees += 1;
            stats.nodes += tree.nodes.len();
            stats.leaf_rules += tree.leaf_rules.len();
            stats.max_depth = stats.max_depth.max(tree.depth);
            stats.memory_bytes += tree.memory_bytes();
        }
    }
}

/// How a classifier grouped its rules into trees. Passing it to the next
/// build of a similar rule set ([`Classifier::build_from`]) skips the
/// search for a grouping, which is most of the build time; a plan that no
/// longer fits is ignored, so it only ever costs speed, never correctness.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BuildPlan {
    v4: ForestPlan,
    v6: ForestPlan,
}

/// Rules compiled into decision trees. Immutable once built: publish a new
/// one to change policy.
#[derive(Clone, Debug)]
pub struct Classifier<T> {
    rules: Vec<Rule<T>>,
    v4: Forest<u32>,
    v6: Forest<u128>,
    plan: BuildPlan,
}

impl<T> Classifier<T> {
    /// Compiles `rules` (position = priority) with the default tuning.
    pub fn build(rules: Vec<Rule<T>>) -> Result<Self, BuildError> {
        Self::build_with(rules, &BuildConfig::default())
    }

    /// Compiles `rules` with an explicit tuning.
    pub fn build_with(rules: Vec<Rule<T>>, config: &BuildConfig) -> Result<Self, BuildError> {
        Self::build_from(rules, config, None)
    }

    /// Compiles `rules` starting from the plan of an earlier build (see
    /// [`BuildPlan`]).
    pub fn build_from(
        rules: Vec<Rule<T>>,
        config: &BuildConfig,
        previous: Option<&BuildPlan>,
    ) -> Result<Self, BuildError> {
        if rules.len() > MAX_RULES {
            return Err(BuildError::TooManyRules {
                count: rules.len(),
                max: MAX_RULES,
            });
        }
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for (position, rule) in rules.iter().enumerate() {
            if rule.src.family() != rule.dst.family() {
                return Err(BuildError::FamilyMismatch {
                    position,
                    id: rule.id,
                    src: rule.src.family(),
                    dst: rule.dst.family(),
                });
            }
            let entry = BuildRule::from_rule(position as u32, rule);
            match rule.family() {
                AddrFamily::V4 => v4.push(entry),
                AddrFamily::V6 => v6.push(entry),
            }
        }
        let (v4, v4_plan) = Forest::build(AddrFamily::V4, &v4, config, previous.map(|p| &p.v4));
        let (v6, v6_plan) = Forest::build(AddrFamily::V6, &v6, config, previous.map(|p| &p.v6));
        Ok(Self {
            v4,
            v6,
            rules,
            plan: BuildPlan {
                v4: v4_plan,
                v6: v6_plan,
            },
        })
    }

    /// How this classifier grouped its rules, for the next build.
    pub fn plan(&self) -> &BuildPlan {
        &self.plan
    }

    /// Position of the first rule matching `key`.
    #[inline]
    pub fn classify(&self, key: &FlowKey) -> Option<u32> {
        let best = match key.family {
            AddrFamily::V4 => self.v4.lookup(&tree_key(key)),
            AddrFamily::V6 => self.v6.lookup(&tree_key(key)),
        };
        (best != NO_MATCH).then_some(best)
    }

    /// The first matching rule itself.
    pub fn classify_rule(&self, key: &FlowKey) -> Option<&Rule<T>> {
        self.classify(key)
            .and_then(|position| self.rules.get(position as usize))
    }

    /// Classifies `keys` into `out` (`out[i]` for `keys[i]`; extra `out`
    /// entries are left alone, extra keys are not classified). Keys go
    /// through the trees several at a time so their memory stalls overlap.
    pub fn classify_batch(&self, keys: &[FlowKey], out: &mut [Option<u32>]) {
        let n = keys.len().min(out.len());
        for (keys, out) in keys[..n].chunks(LANES).zip(out[..n].chunks_mut(LANES)) {
            let family = keys.first().map(|k| k.family);
            let one_family = keys.len() == LANES && keys.iter().all(|k| Some(k.family) == family);
            let mut best = [NO_MATCH; LANES];
            match family {
                Some(AddrFamily::V4) if one_family => {
                    let lanes: [TreeKey<u32>; LANES] = std::array::from_fn(|i| tree_key(&keys[i]));
                    self.v4.lookup_lanes(&lanes, &mut best);
                }
                Some(AddrFamily::V6) if one_family => {
                    let lanes: [TreeKey<u128>; LANES] = std::array::from_fn(|i| tree_key(&keys[i]));
                    self.v6.lookup_lanes(&lanes, &mut best);
                }
                // A short or mixed chunk: one key at a time.
                _ => {
                    for (key, slot) in keys.iter().zip(out.iter_mut()) {
                        *slot = self.classify(key);
                    }
                    continue;
                }
            }
            for (slot, b) in out.iter_mut().zip(best) {
                *slot = (b != NO_MATCH).then_some(b);
            }
        }
    }

    pub fn rules(&self) -> &[Rule<T>] {
        &self.rules
    }

    /// The work `classify` does for `key`: trees searched, node steps, rule
    /// copies compared. For tuning and the benchmark report, not the hot path.
    pub fn lookup_work(&self, key: &FlowKey) -> LookupWork {
        match key.family {
            AddrFamily::V4 => self.v4.lookup_work(&tree_key(key)),
            AddrFamily::V6 => self.v6.lookup_work(&tree_key(key)),
        }
    }

    /// Shape of every tree (IPv4 first), in search order.
    pub fn tree_stats(&self) -> Vec<TreeStats> {
        self.v4.tree_stats().chain(self.v6.tree_stats()).collect()
    }

    pub fn stats(&self) -> ClassifierStats {
        let mut stats = ClassifierStats {
            rules: self.rules.len(),
            ..Default::default()
        };
        self.v4.add_stats(&mut stats);
        self.v6.add_stats(&mut stats);
        stats
    }
}

fn tree_key<A: AddrWord>(key: &FlowKey) -> TreeKey<A> {
    TreeKey {
        fields: [
            A::from_u128(key.src),
            A::from_u128(key.dst),
            A::from_u128(key.src_port.into()),
            A::from_u128(key.dst_port.into()),
            A::from_u128(key.proto.into()),
            A::default(),
            A::default(),
            A::default(),
        ],
        ports: (key.src_port, key.dst_port),
        proto: key.proto,
    }
}
