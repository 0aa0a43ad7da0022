//! Endpoint selectors: who a rule's `from` or `to` means.
//!
//! - `any`: every address;
//! - `ip_list:NAME`: the CIDRs of a named list;
//! - a CIDR or address (`10.0.0.0/8`, `fd00::1`);
//! - a label selector: terms joined by commas, all of which must hold
//!   (AND): `key=value`, `key!=value`, `key in (a, b)`, `has(key)`.
//!
//! A label selector names workloads, and through them their addresses.
//! It is evaluated against the workloads known at compile time. A
//! workload added or relabelled later is picked up by the next
//! compilation, which every workload change triggers.

use std::collections::BTreeMap;

use crate::syntax::{parse_cidr, AddressMatch};

/// One term of a label selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LabelTerm {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    Has(String),
}

impl LabelTerm {
    fn holds(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            LabelTerm::Equals(k, v) => labels.get(k) == Some(v),
            // A workload without the key is not `key=value`, so `!=` holds.
            LabelTerm::NotEquals(k, v) => labels.get(k) != Some(v),
            LabelTerm::In(k, values) => labels.get(k).is_some_and(|v| values.contains(v)),
            LabelTerm::Has(k) => labels.contains_key(k),
        }
    }
}

/// A parsed `from` or `to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    Any,
    IpList(String),
    Cidr(AddressMatch),
    Labels(Vec<LabelTerm>),
}

impl Selector {
    /// Does a workload with these labels match? (Only label selectors
    /// select workloads.)
    pub fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Selector::Labels(terms) => terms.iter().all(|t| t.holds(labels)),
            _ => false,
        }
    }
}

fn valid_label_part(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 63
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

/// Checks a label key or value; the message names what is wrong.
pub fn check_label(text: &str, what: &str) -> Result<(), String> {
    if valid_label_part(text) {
        Ok(())
    } else {
        Err(format!(
            "{what} `{text}` must be 1-63 characters of letters, digits, '-', '_', '.', '/'"
        ))
    }
}

/// Splits on commas outside parentheses.
fn split_terms(text: &str) -> Result<Vec<&str>, String> {
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err(format!("`{text}`: unbalanced ')'"));
                }
            }
            ',' if depth == 0 => {
                terms.push(text[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(format!("`{text}`: unbalanced '('"));
    }
    terms.push(text[start..].trim());
    Ok(terms)
}

fn parse_term(term: &str) -> Result<LabelTerm, String> {
    if term.is_empty() {
        return Err("an empty term (two commas in a row?)".into());
    }
    if let Some(inner) = term.strip_prefix("has(").and_then(|t| t.strip_suffix(')')) {
        let key = inner.trim();
        check_label(key, "label key")?;
        return Ok(LabelTerm::Has(key.to_string()));
    }
    if let Some((key, value)) = term.split_once("!=") {
        let (key, value) = (key.trim(), value.trim());
        check_label(key, "label key")?;
        check_label(value, "label value")?;
        return Ok(LabelTerm::NotEquals(key.into(), value.into()));
    }
    if let Some((key, value)) = term.split_once('=') {
        let (key, value) = (key.trim(), value.trim());
        check_label(key, "label key")?;
        check_label(value, "label value")?;
        return Ok(LabelTerm::Equals(key.into(), value.into()));
    }
    if let Some((key, rest)) = term.split_once(" in ") {
        let key = key.trim();
        check_label(key, "label key")?;
        let list = rest
            .trim()
            .strip_prefix('(')
            .and_then(|r| r.strip_suffix(')'))
            .ok_or_else(|| format!("`{term}`: write `{key} in (a, b)`"))?;
        let values: Vec<String> = list.split(',').map(|v| v.trim().to_string()).collect();
        for value in &values {
            check_label(value, "label value")?;
        }
        return Ok(LabelTerm::In(key.into(), values));
    }
    Err(format!(
        "`{term}` is not a selector term (key=value, key!=value, key in (a, b), has(key))"
    ))
}

/// Parses a `from` or `to` (see the module header).
pub fn parse_selector(text: &str) -> Result<Selector, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("any") {
        return Ok(Selector::Any);
    }
    if let Some(name) = text.strip_prefix("ip_list:") {
        let name = name.trim();
        if name.is_empty() {
            return Err("`ip_list:` needs a list name".into());
        }
        return Ok(Selector::IpList(name.to_string()));
    }
    let is_ip = |t: &str| t.trim().parse::<std::net::IpAddr>().is_ok();
    let looks_like_address = is_ip(text) || text.split_once('/').is_some_and(|(a, _)| is_ip(a));
    if looks_like_address {
        return parse_cidr(text).map(Selector::Cidr);
    }
    let terms = split_terms(text)?
        .into_iter()
        .map(parse_term)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("`{text}`: {e}"))?;
    Ok(Selector::Labels(terms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_form_parses() {
        assert_eq!(parse_selector("any"), Ok(Selector::Any));
        assert_eq!(
            parse_selector("ip_list:office"),
            Ok(Selector::IpList("office".into()))
        );
        assert!(matches!(
            parse_selector("10.0.0.0/8"),
            Ok(Selector::Cidr(_))
        ));
        assert!(matches!(parse_selector("fd00::1"), Ok(Selector::Cidr(_))));
        assert_eq!(
            parse_selector("role=web, env!=dev, tier in (a, b), has(owner)"),
            Ok(Selector::Labels(vec![
                LabelTerm::Equals("role".into(), "web".into()),
                LabelTerm::NotEquals("env".into(), "dev".into()),
                LabelTerm::In("tier".into(), vec!["a".into(), "b".into()]),
                LabelTerm::Has("owner".into()),
            ]))
        );
    }

    #[test]
    fn label_selectors_select_by_and() {
        let web_prod = labels(&[("role", "web"), ("env", "prod")]);
        let web_dev = labels(&[("role", "web"), ("env", "dev")]);
        let bare = labels(&[]);
        let sel = parse_selector("role=web,env!=dev").expect("valid");
        assert!(sel.selects(&web_prod));
        assert!(!sel.selects(&web_dev));
        assert!(!sel.selects(&bare));
        let any_env = parse_selector("env in (dev, prod)").expect("valid");
        assert!(any_env.selects(&web_dev) && !any_env.selects(&bare));
        assert!(parse_selector("has(env)")
            .expect("valid")
            .selects(&web_prod));
        assert!(parse_selector("env!=dev").expect("valid").selects(&bare));
        assert!(
            !Selector::Any.selects(&web_prod),
            "any selects addresses, not workloads"
        );
    }

    #[test]
    fn bad_selectors_say_why() {
        for (text, expected) in [
            ("role==web", "label value `=web`"),
            ("role=web,,env=prod", "empty term"),
            ("tier in a, b", "write `tier in (a, b)`"),
            ("has(env", "unbalanced"),
            ("role", "not a selector term"),
            ("ip_list:", "needs a list name"),
            ("10.0.0.1/40", "prefix length"),
            ("role=we b", "label value `we b`"),
        ] {
            let err = parse_selector(text).expect_err(text);
            assert!(err.contains(expected), "{text}: {err}");
        }
    }
}
