//! Quarantine: isolate a compromised workload (or address) at once.
//!
//! A quarantine is enforced twice over:
//! - in the policy: an overlay evaluated before every policy (see
//!   `PolicyEngine::set_overlay`) allows the break-glass services (say SSH
//!   from a jump host) and denies everything else to and from the
//!   quarantined addresses; the new generation makes the dataplane re-check
//!   established connections, so those now denied are cut;
//! - in XDP, when there is no break-glass: the addresses go into every
//!   port's quarantine map, so their frames are dropped before they reach
//!   a socket, and their tracked connections are removed.
//!
//! Quarantines are kept in `state_dir/quarantine.json` (written durably
//! before anything is enforced), so they survive a restart; one with a TTL
//! is lifted when it runs out (`expire`). Every change is audited.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use microseg_dataplane::conntrack::{ConnKey, ConntrackTable, EndReason};
use microseg_dataplane::packet::ip_to_u128;
use serde::{Deserialize, Serialize};

use crate::engine::{EngineError, PolicyEngine};
use crate::policy::selector::parse_selector;
use crate::policy::{ActionName, ModeName, Policy, PolicyRule};
use crate::store::{unix_now, AuditEntry, Store, StoreError};
use crate::syntax::parse_service;

/// The state file under `state_dir`.
pub const STATE_FILE: &str = "quarantine.json";

/// Why a quarantine request was refused.
#[derive(Debug, thiserror::Error)]
pub enum QuarantineError {
    /// The request names something wrong (`path`: what).
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error("{0} is already quarantined (lift it first to change it)")]
    Already(String),
    #[error("{0} is not quarantined")]
    NotQuarantined(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("{STATE_FILE} is damaged: {0}")]
    Damaged(String),
}

fn invalid(path: &str, message: impl Into<String>) -> QuarantineError {
    QuarantineError::Invalid {
        path: path.into(),
        message: message.into(),
    }
}

/// The addresses the quarantines of `book` hold in XDP, IPv4-mapped IPv6
/// as IPv4 (the quarantine map's key is the same for both).
fn held_in_xdp(book: &BTreeMap<String, Quarantined>) -> HashSet<IpAddr> {
    book.values()
        .filter(|q| q.at_xdp())
        .flat_map(|q| q.addresses.iter().map(IpAddr::to_canonical))
        .collect()
}

/// Traffic that stays allowed to a quarantined target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakGlass {
    /// Who may still reach the target: a selector (`role=jump`), a CIDR,
    /// `ip_list:NAME`.
    pub from: String,
    /// `tcp/22` and the like.
    pub services: Vec<String>,
}

/// `POST /v1/quarantine`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuarantineRequest {
    /// A workload's name or an address.
    pub target: String,
    /// Lifted by itself after this long.
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub break_glass: Vec<BreakGlass>,
}

/// One quarantine in force.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantined {
    pub target: String,
    /// The addresses isolated (a workload's, when it was quarantined).
    pub addresses: Vec<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub who: String,
    /// Unix seconds.
    pub since: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub break_glass: Vec<BreakGlass>,
}

impl Quarantined {
    /// Dropped in XDP (no break-glass traffic to let through)?
    pub fn at_xdp(&self) -> bool {
        self.break_glass.is_empty()
    }

    /// The overlay policy enforcing this quarantine.
    fn policy(&self) -> Policy {
        let mut rules = Vec::new();
        for address in &self.addresses {
            for (i, glass) in self.break_glass.iter().enumerate() {
                rules.push(PolicyRule {
                    name: Some(format!("break-glass[{i}]")),
                    from: glass.from.clone(),
                    to: address.to_string(),
                    services: glass.services.clone(),
                    action: ActionName::Allow,
                    mode: None,
                });
            }
            for (name, from, to) in [
                ("isolate-in", "any".to_string(), address.to_string()),
                ("isolate-out", address.to_string(), "any".to_string()),
            ] {
                rules.push(PolicyRule {
                    name: Some(name.into()),
                    from,
                    to,
                    services: vec!["any".into()],
                    action: ActionName::Deny,
                    mode: None,
                });
            }
        }
        Policy {
            name: format!("quarantine:{}", self.target),
            mode: ModeName::Enforce,
            priority: 0,
            rules,
        }
    }
}

/// What enforces quarantine in the dataplane.
pub trait Enforcer: Send + Sync {
    /// Drop every frame from or to `address` in XDP.
    fn block(&self, address: IpAddr) -> Result<(), String>;
    /// Undo `block`.
    fn release(&self, address: IpAddr) -> Result<(), String>;
    /// The connection table, whose entries of blocked addresses are cut.
    fn conntrack(&self) -> &ConntrackTable;
}

/// Removes every tracked connection with an end in `addresses`; returns
/// how many.
pub fn cut_connections(table: &ConntrackTable, addresses: &[IpAddr]) -> usize {
    let wanted: Vec<_> = addresses.iter().map(|a| ip_to_u128(*a)).collect();
    let mut doomed: Vec<ConnKey> = Vec::new();
    table.for_each(|key, _| {
        if wanted.iter().any(|&(family, addr)| {
            key.family == family && (key.addr(0) == addr || key.addr(1) == addr)
        }) {
            doomed.push(*key);
        }
    });
    doomed
        .iter()
        .filter(|key| table.remove(key, EndReason::Removed).is_some())
        .count()
}

/// What a quarantine action did, for alerts and the API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct QuarantineAction {
    pub quarantine: Quarantined,
    /// The policy generation that enforces it (None in rules-file mode).
    pub generation: Option<u32>,
    /// Connections cut at once (XDP quarantines).
    pub connections_cut: usize,
    /// Problems with XDP, if any (the policy still enforces).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub xdp_errors: Vec<String>,
}

/// Hears of every quarantine action (alerts).
pub type QuarantineListener = Arc<dyn Fn(&QuarantineAction, bool) + Send + Sync>;

/// The quarantines in force.
pub struct Quarantines {
    store: Arc<Store>,
    engine: Option<Arc<PolicyEngine>>,
    enforcer: Mutex<Option<Arc<dyn Enforcer>>>,
    listener: Mutex<Option<QuarantineListener>>,
    /// By target. Changes are serialized by this lock.
    book: Mutex<BTreeMap<String, Quarantined>>,
}

impl std::fmt::Debug for Quarantines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quarantines")
            .field("book", &*self.lock())
            .finish_non_exhaustive()
    }
}

impl Quarantines {
    /// Loads the quarantines stored under the state directory (dropping
    /// those that ran out while nothing ran) and puts their overlay in
    /// force in `engine`, before any frame is forwarded.
    pub fn open(
        store: Arc<Store>,
        engine: Option<Arc<PolicyEngine>>,
    ) -> Result<Self, QuarantineError> {
        let book: BTreeMap<String, Quarantined> = match store.read_file(STATE_FILE)? {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| QuarantineError::Damaged(e.to_string()))?,
            None => BTreeMap::new(),
        };
        let now = unix_now();
        let stored = book.len();
        let book: BTreeMap<String, Quarantined> = book
            .into_iter()
            .filter(|(_, q)| q.expires.is_none_or(|at| at > now))
            .collect();
        let expired = book.len() < stored;
        let quarantines = Self {
            store,
            engine,
            enforcer: Mutex::new(None),
            listener: Mutex::new(None),
            book: Mutex::new(book),
        };
        let book = quarantines.lock().clone();
        if expired {
            quarantines.save(&book)?;
        }
        if !book.is_empty() {
            if let Some(engine) = &quarantines.engine {
                engine.set_overlay(
                    overlay(&book),
                    "startup",
                    "quarantines restored".into(),
                    Instant::now(),
                )?;
            }
        }
        Ok(quarantines)
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Quarantined>> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn enforcer(&self) -> Option<Arc<dyn Enforcer>> {
        self.enforcer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Hands over the dataplane: every XDP quarantine in the book is
    /// blocked there from now on. Returns XDP problems (also reported).
    pub fn attach(&self, enforcer: Arc<dyn Enforcer>) -> Vec<String> {
        let book = self.lock();
        let mut errors = Vec::new();
        for q in book.values().filter(|q| q.at_xdp()) {
            for address in &q.addresses {
                if let Err(e) = enforcer.block(*address) {
                    errors.push(format!("{address}: {e}"));
                }
            }
            cut_connections(enforcer.conntrack(), &q.addresses);
        }
        *self.enforcer.lock().unwrap_or_else(|p| p.into_inner()) = Some(enforcer);
        errors
    }

    /// Lets go of the dataplane (it is stopping).
    pub fn detach(&self) {
        self.enforcer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }

    /// Who hears of quarantine actions (`true`: put in force, `false`:
    /// lifted).
    pub fn listen(&self, listener: QuarantineListener) {
        *self.listener.lock().unwrap_or_else(|p| p.into_inner()) = Some(listener);
    }

    fn tell(&self, action: &QuarantineAction, put: bool) {
        let listener = self
            .listener
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(listener) = listener {
            listener(action, put);
        }
    }

    /// The addresses the quarantines hold in XDP (for `Appliance::start`,
    /// before `attach`).
    pub fn xdp_addresses(&self) -> Vec<IpAddr> {
        held_in_xdp(&self.lock()).into_iter().collect()
    }

    pub fn list(&self) -> Vec<Quarantined> {
        self.lock().values().cloned().collect()
    }

    fn save(&self, book: &BTreeMap<String, Quarantined>) -> Result<(), QuarantineError> {
        let bytes =
            serde_json::to_vec_pretty(book).map_err(|e| QuarantineError::Damaged(e.to_string()))?;
        Ok(self.store.write_file(STATE_FILE, &bytes)?)
    }

    /// The addresses `target` stands for: an address, or a workload's.
    fn resolve(&self, target: &str) -> Result<Vec<IpAddr>, QuarantineError> {
        if let Ok(address) = target.trim().parse::<IpAddr>() {
            return Ok(vec![address]);
        }
        let engine = self.engine.as_ref().ok_or_else(|| {
            invalid(
                "target",
                format!("`{target}` is not an address (workloads need the policy engine)"),
            )
        })?;
        let (_, document) = engine.current();
        let workload = document
            .workloads
            .iter()
            .find(|w| w.name == target)
            .ok_or_else(|| {
                invalid(
                    "target",
                    format!("`{target}` is neither an address nor a workload"),
                )
            })?;
        let addresses: Vec<IpAddr> = workload
            .addresses
            .iter()
            .filter_map(|a| a.trim().parse().ok())
            .collect();
        if addresses.is_empty() {
            return Err(invalid(
                "target",
                format!("workload `{target}` has no address"),
            ));
        }
        Ok(addresses)
    }

    fn check(&self, request: &QuarantineRequest) -> Result<(), QuarantineError> {
        if request.ttl_seconds == Some(0) {
            return Err(invalid("ttl_seconds", "must be at least 1"));
        }
        if !request.break_glass.is_empty() && self.engine.is_none() {
            return Err(invalid(
                "break_glass",
                "break-glass services need the policy engine (the rules-file mode can only isolate completely)",
            ));
        }
        for (i, glass) in request.break_glass.iter().enumerate() {
            parse_selector(&glass.from)
                .map_err(|e| invalid(&format!("break_glass[{i}].from"), e))?;
            if glass.services.is_empty() {
                return Err(invalid(
                    &format!("break_glass[{i}].services"),
                    "name at least one service",
                ));
            }
            for (j, service) in glass.services.iter().enumerate() {
                parse_service(service)
                    .map_err(|e| invalid(&format!("break_glass[{i}].services[{j}]"), e))?;
            }
        }
        Ok(())
    }

    /// Puts `request` in force: stored, then the policy overlay, then XDP
    /// and the cut of connections. Nothing changes if it is refused.
    pub fn add(
        &self,
        request: QuarantineRequest,
        who: &str,
    ) -> Result<QuarantineAction, QuarantineError> {
        self.check(&request)?;
        let addresses = self.resolve(&request.target)?;
        let mut book = self.lock();
        let target = request.target.trim().to_string();
        if book.contains_key(&target) {
            return Err(QuarantineError::Already(target));
        }
        let now = unix_now();
        let quarantined = Quarantined {
            target: target.clone(),
            addresses,
            reason: request.reason,
            who: who.to_string(),
            since: now,
            expires: request.ttl_seconds.map(|ttl| now.saturating_add(ttl)),
            break_glass: request.break_glass,
        };
        let mut next = book.clone();
        next.insert(target.clone(), quarantined.clone());
        let action = format!("quarantine {target}");
        let generation = self.enforce(&book, &next, &action)?;
        *book = next;
        let mut done = QuarantineAction {
            quarantine: quarantined,
            generation,
            connections_cut: 0,
            xdp_errors: Vec::new(),
        };
        // Under the book's lock, so that XDP changes in the order of the
        // book's: a lift racing this add cannot release after it blocks.
        if let Some(enforcer) = self.enforcer().filter(|_| done.quarantine.at_xdp()) {
            for address in &done.quarantine.addresses {
                if let Err(e) = enforcer.block(*address) {
                    done.xdp_errors.push(format!("{address}: {e}"));
                }
            }
            done.connections_cut =
                cut_connections(enforcer.conntrack(), &done.quarantine.addresses);
        }
        drop(book);
        if self.engine.is_none() {
            self.audit(who, &action)?;
        }
        self.tell(&done, true);
        Ok(done)
    }

    /// Stores `book` in place of `previous` and puts its overlay in force;
    /// the policy generation that enforces it. If the policy refuses it,
    /// `previous` is stored again.
    fn enforce(
        &self,
        previous: &BTreeMap<String, Quarantined>,
        book: &BTreeMap<String, Quarantined>,
        action: &str,
    ) -> Result<Option<u32>, QuarantineError> {
        self.save(book)?;
        let Some(engine) = &self.engine else {
            return Ok(None);
        };
        match engine.set_overlay(
            overlay(book),
            "quarantine",
            action.to_string(),
            Instant::now(),
        ) {
            Ok(applied) => Ok(Some(applied.generation)),
            Err(error) => {
                let _ = self.save(previous);
                Err(error.into())
            }
        }
    }

    fn audit(&self, who: &str, action: &str) -> Result<(), QuarantineError> {
        Ok(self.store.audit(&AuditEntry {
            time: unix_now(),
            who: who.to_string(),
            action: action.to_string(),
            version: None,
            detail: String::new(),
        })?)
    }

    /// Lifts the quarantine of `target`.
    pub fn lift(&self, target: &str, who: &str) -> Result<QuarantineAction, QuarantineError> {
        let mut book = self.lock();
        let target = target.trim();
        let Some(lifted) = book.get(target).cloned() else {
            return Err(QuarantineError::NotQuarantined(target.to_string()));
        };
        let mut next = book.clone();
        next.remove(target);
        let action = format!("lift quarantine {target} ({who})");
        let generation = self.enforce(&book, &next, &action)?;
        let still_held = held_in_xdp(&next);
        *book = next;
        let mut done = QuarantineAction {
            quarantine: lifted,
            generation,
            connections_cut: 0,
            xdp_errors: Vec::new(),
        };
        // Under the book's lock (see `add`). XDP holds a set of addresses:
        // one that another quarantine still holds (a workload's and its
        // address's, or two spellings of one address) stays blocked.
        if let Some(enforcer) = self.enforcer().filter(|_| done.quarantine.at_xdp()) {
            let released = done.quarantine.addresses.iter();
            for address in released.filter(|a| !still_held.contains(&a.to_canonical())) {
                if let Err(e) = enforcer.release(*address) {
                    done.xdp_errors.push(format!("{address}: {e}"));
                }
            }
        }
        drop(book);
        if self.engine.is_none() {
            self.audit(who, &action)?;
        }
        self.tell(&done, false);
        Ok(done)
    }

    /// Lifts every quarantine whose TTL ran out by `now` (Unix seconds).
    pub fn expire(&self, now: u64) -> Vec<QuarantineAction> {
        let due: Vec<String> = self
            .lock()
            .values()
            .filter(|q| q.expires.is_some_and(|at| at <= now))
            .map(|q| q.target.clone())
            .collect();
        due.iter()
            .filter_map(|target| self.lift(target, "ttl").ok())
            .collect()
    }
}

/// The overlay enforcing every quarantine of `book`.
pub fn overlay(book: &BTreeMap<String, Quarantined>) -> Vec<Policy> {
    book.values().map(Quarantined::policy).collect()
}

#[cfg(test)]
mod tests;
