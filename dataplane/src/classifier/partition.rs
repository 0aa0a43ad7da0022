//! Which rules share a tree.
//!
//! Rules start in four shape classes by whether their source and destination
//! prefixes are "small" (long), as CutSplit does: cutting rules that are all
//! narrow in a field replicates little, while one wide rule in a tree that
//! cuts that field lands in every leaf.
//!
//! Four trees cost four traversals per lookup, though, and which classes can
//! share a tree cheaply depends on the rule set (merging "both small" into
//! "destination small" halves fw1_10k's lookup time, and quadruples
//! acl1_100k's). So the build measures instead of guessing: it greedily
//! merges the pair of groups that most lowers the lookup work on a sample of
//! keys drawn from inside the rules, and stops when no merge pays. Lookup
//! work is what `Tree::lookup_work` counts: node steps and rule copies
//! compared, plus a fixed cost per tree searched. A merged tree whose rule
//! copies outgrow a budget is abandoned mid-build, so explosive merges are
//! cheap to reject. Each grouping is built at most once (≤ 15 builds).
//!
//! Safety net: no class may hold more than `max_copies_per_rule` copies per
//! rule. One that would is split in two by position and each half built
//! alone, recursively (a half of at most `leaf_size` rules is one leaf), so
//! memory stays bounded for any rule set, at the price of more trees.
//!
//! The search is most of a build's time (on acl1_10k, three of its four
//! big tree builds are candidate merges), so two things cut it short: the
//! builds of one search round are independent and run on
//! `BuildConfig::threads` threads; and the grouping found (a
//! [`ForestPlan`]) is handed to the next build, which builds the planned
//! groups directly while the class sizes stay close (a policy edit).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::build::{build_tree, BuildConfig, BuildRule};
use super::rng::SplitMix64;
use super::tree::{
    AddrWord, Tree, TreeKey, DIMS, DIM_DPORT, DIM_PROTO, DIM_SPORT, FIELD_SLOTS, NO_MATCH,
};

/// Shape classes: bit 1 = source small, bit 0 = destination small.
const CLASSES: usize = 4;

/// A set of shape classes, as a bit mask over `CLASSES`.
type Group = u8;

/// Work charged per tree searched, in node-step units (the loop, the
/// unpredictable exit, the cold root).
const TREE_COST: usize = 3;

/// A merge must cut the sampled work by at least 1/this to be taken.
const MIN_GAIN_DIVISOR: usize = 32;

/// How one build grouped a family's shape classes into trees. The search
/// for it costs most of a build (each candidate merge builds a tree), and a
/// policy edit rarely changes which grouping is best, so the next build of
/// a similar rule set starts from it (see `build_forest`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ForestPlan {
    /// Rules per shape class when the plan was made.
    pub(super) class_sizes: [usize; CLASSES],
    /// The groups built as one tree each; a non-empty class in none of them
    /// was built in halves.
    pub(super) groups: Vec<Group>,
}

/// A plan is reused while every class keeps its size within 1/this, plus
/// `PLAN_SLACK_RULES` (small classes cost little however they are grouped),
/// and empty classes stay empty.
const PLAN_TOLERANCE_DIVISOR: usize = 8;
const PLAN_SLACK_RULES: usize = 64;

impl ForestPlan {
    fn fits(&self, classes: &[Vec<BuildRule>; CLASSES]) -> bool {
        self.class_sizes
            .iter()
            .zip(classes)
            .all(|(&planned, class)| {
                (planned == 0) == class.is_empty()
                    && class.len().abs_diff(planned)
                        <= planned / PLAN_TOLERANCE_DIVISOR + PLAN_SLACK_RULES
            })
    }
}

/// Builds the trees for `rules` (one family, sorted by position), ordered
/// by the best position each holds, and the plan they follow. With a
/// `previous` plan that still fits the classes' sizes, its groups are built
/// directly; otherwise (or if a planned tree outgrows its budget) the
/// grouping is searched anew.
pub fn build_forest<A: AddrWord>(
    rules: &[BuildRule],
    bbox: [(u128, u128); DIMS],
    config: &BuildConfig,
    previous: Option<&ForestPlan>,
) -> (Vec<Tree<A>>, ForestPlan) {
    let classes = shape_classes(rules, config);
    let class_sizes = std::array::from_fn(|c| classes[c].len());
    if let Some(plan) = previous.filter(|p| p.fits(&classes)) {
        if let Some(trees) = build_planned(&classes, &plan.groups, bbox, config) {
            let plan = ForestPlan {
                class_sizes,
                groups: plan.groups.clone(),
            };
            return (trees, plan);
        }
    }
    let (trees, groups) = search_on_subset(rules, &classes, bbox, config)
        .unwrap_or_else(|| search_forest(rules, &classes, bbox, config));
    (
        trees,
        ForestPlan {
            class_sizes,
            groups,
        },
    )
}

/// Builds `groups` as planned, and every class in none of them in halves;
/// `None` if a planned tree outgrows its budget.
fn build_planned<A: AddrWord>(
    classes: &[Vec<BuildRule>; CLASSES],
    groups: &[Group],
    bbox: [(u128, u128); DIMS],
    config: &BuildConfig,
) -> Option<Vec<Tree<A>>> {
    let jobs = groups
        .iter()
        .map(|&g| {
            let members = union(classes, g);
            let budget = copy_budget(members.len(), config);
            (members, Some(budget))
        })
        .collect();
    let mut trees = build_jobs(jobs, bbox, config)
        .into_iter()
        .collect::<Option<Vec<Tree<A>>>>()?;
    let grouped = groups.iter().fold(0, |all, g| all | g);
    for (c, class) in classes.iter().enumerate() {
        if grouped & (1 << c) == 0 {
            build_halves(class, bbox, config, &mut trees);
        }
    }
    trees.sort_by_key(|t| t.min_position);
    Some(trees)
}

/// For a family larger than `config.search_rules`: searches the grouping on
/// an evenly spaced subset of the rules (every k-th by position, so each
/// class keeps its share), then builds that grouping from every rule.
/// `None` when the family is small enough to search in full, or when a
/// tree of the grouping outgrows its budget at full size.
fn search_on_subset<A: AddrWord>(
    rules: &[BuildRule],
    classes: &[Vec<BuildRule>; CLASSES],
    bbox: [(u128, u128); DIMS],
    config: &BuildConfig,
) -> Option<(Vec<Tree<A>>, Vec<Group>)> {
    if config.search_rules == 0 || rules.len() <= config.search_rules {
        return None;
    }
    let stride = rules.len().div_ceil(config.search_rules);
    let subset: Vec<BuildRule> = rules.iter().step_by(stride).copied().collect();
    // Groups hold only classes with rules in the subset, so with rules in
    // full; a class with none in the subset is in no group and
    // `build_planned` builds it on its own.
    let (_, groups) = search_forest::<A>(&subset, &shape_classes(&subset, config), bbox, config);
    let trees = build_planned(classes, &groups, bbox, config)?;
    Some((trees, groups))
}

/// Searches for the grouping of classes that minimises lookup work on a
/// sample of keys (see the module header), and returns its trees and groups.
fn search_forest<A: AddrWord>(
    rules: &[BuildRule],
    classes: &[Vec<BuildRule>; CLASSES],
    bbox: [(u128, u128); DIMS],
    config: &BuildConfig,
) -> (Vec<Tree<A>>, Vec<Group>) {
    let mut groups: Vec<Group> = (0..CLASSES)
        .filter(|&c| !classes[c].is_empty())
        .map(|c| 1 << c)
        .collect();
    let mut built: HashMap<Group, Option<Tree<A>>> = HashMap::new();
    let mut fallback: Vec<Tree<A>> = Vec::new();
    let singles = groups
        .iter()
        .map(|&g| {
            let class = &classes[g.trailing_zeros() as usize];
            (class.clone(), Some(copy_budget(class.len(), config)))
        })
        .collect();
    for (g, tree) in groups
        .clone()
        .into_iter()
        .zip(build_jobs(singles, bbox, config))
    {
        match tree {
            Some(tree) => {
                built.insert(g, Some(tree));
            }
            None => {
                build_halves(
                    &classes[g.trailing_zeros() as usize],
                    bbox,
                    config,
                    &mut fallback,
                );
                groups.retain(|&kept| kept != g);
            }
        }
    }

    if config.merge_samples > 0 && groups.len() > 1 {
        let sample = sample_keys::<A>(rules, config.merge_samples);
        let mut current = forest_work(&groups, &built, &sample);
        loop {
            // Every merge this round may take, built at once.
            let mut untried: Vec<Group> = Vec::new();
            let mut jobs = Vec::new();
            for i in 0..groups.len() {
                for j in i + 1..groups.len() {
                    let merged = groups[i] | groups[j];
                    if !built.contains_key(&merged) && !untried.contains(&merged) {
                        let budget = merge_budget(groups[i], groups[j], &built);
                        untried.push(merged);
                        jobs.push((union(classes, merged), Some(budget)));
                    }
                }
            }
            built.extend(untried.into_iter().zip(build_jobs(jobs, bbox, config)));
            let mut best: Option<(usize, usize, usize)> = None;
            for i in 0..groups.len() {
                for j in i + 1..groups.len() {
                    if built
                        .get(&(groups[i] | groups[j]))
                        .is_some_and(Option::is_some)
                    {
                        let candidate = with_merge(&groups, i, j);
                        let work = forest_work(&candidate, &built, &sample);
                        if best.is_none_or(|(w, _, _)| work < w) {
                            best = Some((work, i, j));
                        }
                    }
                }
            }
            match best {
                Some((work, i, j)) if work + current / MIN_GAIN_DIVISOR < current => {
                    groups = with_merge(&groups, i, j);
                    current = work;
                }
                _ => break,
            }
        }
    }

    let mut trees: Vec<Tree<A>> = groups
        .iter()
        .filter_map(|g| built.remove(g).flatten())
        .chain(fallback)
        .collect();
    trees.sort_by_key(|t| t.min_position);
    (trees, groups)
}

/// Builds one tree per job (rules, copy budget), on up to
/// `config.threads` threads, largest jobs first; results in job order.
/// The trees do not depend on the thread count.
fn build_jobs<A: AddrWord>(
    jobs: Vec<(Vec<BuildRule>, Option<usize>)>,
    bbox: [(u128, u128); DIMS],
    config: &BuildConfig,
) -> Vec<Option<Tree<A>>> {
    let threads = config.threads.clamp(1, jobs.len().max(1));
    if threads == 1 {
        return jobs
            .iter()
            .map(|(rules, budget)| build_tree(rules, bbox, config, *budget))
            .collect();
    }
    let mut order: Vec<usize> = (0..jobs.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(jobs[i].0.len()));
    let next = AtomicUsize::new(0);
    let mut results: Vec<Option<Tree<A>>> = (0..jobs.len()).map(|_| None).collect();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    while let Some(&i) = order.get(next.fetch_add(1, Ordering::Relaxed)) {
                        let (rules, budget) = &jobs[i];
                        done.push((i, build_tree(rules, bbox, config, *budget)));
                    }
                    done
                })
            })
            .collect();
        for worker in workers {
            // A build that panicked is a bug in the builder; surface it.
            let done = worker
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            for (i, tree) in done {
                results[i] = tree;
            }
        }
    });
    results
}

/// The most rule copies a tree of `rules` rules may hold.
fn copy_budget(rules: usize, config: &BuildConfig) -> usize {
    rules.saturating_mul(config.max_copies_per_rule) + 4096
}

/// Builds `rules` (sorted by position) as trees within the copy budget,
/// halving by position until each part fits.
fn build_halves<A: AddrWord>(
    rules: &[BuildRule],
    bbox: [(u128, u128); DIMS],
    config: &BuildConfig,
    out: &mut Vec<Tree<A>>,
) {
    if rules.is_empty() {
        return;
    }
    // A part no bigger than a leaf never replicates, so it always fits.
    let budget = (rules.len() > config.leaf_size).then(|| copy_budget(rules.len(), config));
    match build_tree(rules, bbox, config, budget) {
        Some(tree) => out.push(tree),
        None => {
            let (first, second) = rules.split_at(rules.len() / 2);
            build_halves(first, bbox, config, out);
            build_halves(second, bbox, config, out);
        }
    }
}

/// Splits rules into the four shape classes.
fn shape_classes(rules: &[BuildRule], config: &BuildConfig) -> [Vec<BuildRule>; CLASSES] {
    let small = |len: u8| len >= config.small_prefix_bits;
    let mut classes: [Vec<BuildRule>; CLASSES] = Default::default();
    for rule in rules {
        let (src_len, dst_len) = rule.prefix_lens;
        let class = usize::from(small(src_len)) * 2 + usize::from(small(dst_len));
        classes[class].push(*rule);
    }
    classes
}

/// The rules of every class in `group`, in position order.
fn union(classes: &[Vec<BuildRule>; CLASSES], group: Group) -> Vec<BuildRule> {
    let mut members: Vec<BuildRule> = (0..CLASSES)
        .filter(|c| group & (1 << c) != 0)
        .flat_map(|c| classes[c].iter().copied())
        .collect();
    members.sort_by_key(|r| r.position);
    members
}

/// Rule copies a merged tree may hold before it is abandoned: twice what
/// its two parts hold apart, plus slack for small sets.
fn merge_budget<A>(a: Group, b: Group, built: &HashMap<Group, Option<Tree<A>>>) -> usize {
    let copies = |g: Group| {
        built
            .get(&g)
            .and_then(Option::as_ref)
            .map_or(0, |t| t.leaf_rules.len())
    };
    2 * (copies(a) + copies(b)) + 4096
}

/// `groups` with `groups[i]` and `groups[j]` (i < j) replaced by their union.
fn with_merge(groups: &[Group], i: usize, j: usize) -> Vec<Group> {
    let mut merged: Vec<Group> = groups
        .iter()
        .enumerate()
        .filter(|&(k, _)| k != i && k != j)
        .map(|(_, g)| *g)
        .collect();
    merged.push(groups[i] | groups[j]);
    merged
}

/// Total lookup work of the forest made of `groups` over `sample`.
fn forest_work<A: AddrWord>(
    groups: &[Group],
    built: &HashMap<Group, Option<Tree<A>>>,
    sample: &[TreeKey<A>],
) -> usize {
    let mut trees: Vec<&Tree<A>> = groups
        .iter()
        .filter_map(|g| built.get(g).and_then(Option::as_ref))
        .collect();
    trees.sort_by_key(|t| t.min_position);
    let mut work = 0;
    for key in sample {
        let mut best = NO_MATCH;
        for tree in &trees {
            if tree.min_position >= best {
                break;
            }
            let (steps, compared) = tree.lookup_work(key, best);
            work += TREE_COST + steps + compared;
            best = tree.lookup(key, best);
        }
    }
    work
}

/// `count` keys, each a point inside a rule picked uniformly (corners
/// included): the traffic a rule set is written for.
fn sample_keys<A: AddrWord>(rules: &[BuildRule], count: usize) -> Vec<TreeKey<A>> {
    let mut rng = SplitMix64::new(0x5eed_c1a5_51f1);
    if rules.is_empty() {
        return Vec::new();
    }
    (0..count)
        .map(|_| {
            let rule = &rules[(rng.next_u64() % rules.len() as u64) as usize];
            let point: [u128; DIMS] = std::array::from_fn(|d| {
                let (lo, hi) = rule.ranges[d];
                rng.point(lo, hi)
            });
            let mut fields = [A::default(); FIELD_SLOTS];
            for (slot, value) in fields.iter_mut().zip(point) {
                *slot = A::from_u128(value);
            }
            TreeKey {
                fields,
                ports: (point[DIM_SPORT] as u16, point[DIM_DPORT] as u16),
                proto: point[DIM_PROTO] as u8,
            }
        })
        .collect()
}
