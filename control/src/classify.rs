//! `microseg classify` and `microseg trace`: ClassBench files in, first
//! matching rule indexes (or a generated trace) out. This makes any
//! ClassBench set checkable against any other classifier.

use std::io::Write;

use microseg_dataplane::classifier::classbench::{self, ClassBenchError};
use microseg_dataplane::classifier::{BuildError, Classifier, LinearClassifier, Rule};

/// Why a classify or trace command failed; each names its input.
#[derive(Debug, thiserror::Error)]
pub enum ClassifyError {
    #[error("rules file: {0}")]
    Rules(ClassBenchError),
    #[error("trace file: {0}")]
    Trace(ClassBenchError),
    #[error("rules file: {0}")]
    Build(BuildError),
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
}

/// Which classifier answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// The compiled decision trees (the dataplane's classifier).
    Compiled,
    /// The linear reference.
    Reference,
}

fn parse_rules(rules_text: &str) -> Result<Vec<Rule<()>>, ClassifyError> {
    classbench::parse_filters(rules_text).map_err(ClassifyError::Rules)
}

/// Writes, for each trace line in order, the 0-based index of the first
/// matching rule, or -1.
pub fn classify_trace(
    rules_text: &str,
    trace_text: &str,
    engine: Engine,
    out: &mut impl Write,
) -> Result<(), ClassifyError> {
    let rules = parse_rules(rules_text)?;
    let trace = classbench::parse_trace(trace_text).map_err(ClassifyError::Trace)?;
    let answers: Vec<Option<u32>> = match engine {
        Engine::Compiled => {
            let tree = Classifier::build(rules).map_err(ClassifyError::Build)?;
            trace.iter().map(|e| tree.classify(&e.key)).collect()
        }
        Engine::Reference => {
            let linear = LinearClassifier::new(rules);
            trace.iter().map(|e| linear.classify(&e.key)).collect()
        }
    };
    for answer in answers {
        match answer {
            Some(index) => writeln!(out, "{index}")?,
            None => writeln!(out, "-1")?,
        }
    }
    Ok(())
}

/// Writes a trace of `count` keys generated from the rules (a point inside
/// a random rule each, corners included), with the 1-based filter number
/// of the first match as ClassBench's trace generator writes it (0: none).
pub fn generate_trace(
    rules_text: &str,
    count: usize,
    seed: u64,
    out: &mut impl Write,
) -> Result<(), ClassifyError> {
    let rules = parse_rules(rules_text)?;
    let linear = LinearClassifier::new(rules.clone());
    for key in classbench::generate_trace(&rules, count, seed) {
        let filter = linear.classify(&key).map_or(0, |i| u64::from(i) + 1);
        writeln!(out, "{}", classbench::format_trace_line(&key, Some(filter)))?;
    }
    Ok(())
}
