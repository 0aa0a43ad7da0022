//! Durable policy versions and the audit trail, under the state directory:
//!
//! ```text
//! STATE/policy/v00000001.json   one file per version: document and metadata
//! STATE/policy/current          the version in force
//! STATE/audit.jsonl             one line per change: who, when, what
//! ```
//!
//! Every file is written whole to a temporary name, fsynced, renamed over
//! its target, and the directory fsynced: a crash at any instant leaves
//! either the old file or the new one, never a torn mix. Temporary files
//! left by a crash are ignored (and removed) on open. A version file is
//! written before `current` points at it, so `current` never names a
//! version that is not on disk. The engine writes (stages) a version's
//! temporary file while it compiles the document, and renames it into the
//! history only once the compilation succeeded.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::policy::PolicyDocument;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state directory {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is damaged: {message}")]
    Damaged { path: String, message: String },
    #[error("no policy version {0}")]
    NoVersion(u64),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// One stored version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyVersion {
    pub version: u64,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
    /// The token's name that made it (`admin`, `startup`, ...).
    pub author: String,
    /// What happened (`apply`, `rollback to 3`, `workload web-3 put`).
    pub summary: String,
    pub document: PolicyDocument,
}

/// A version without its document (history listings).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VersionInfo {
    pub version: u64,
    pub created_at: u64,
    pub author: String,
    pub summary: String,
}

/// One audit record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub time: u64,
    pub who: String,
    pub action: String,
    /// The version it produced, if any.
    pub version: Option<u64>,
    /// A short diff summary (`+2 rules, -1 workload`).
    pub detail: String,
}

/// The store.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
}

/// Now, in seconds since the epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Writes `bytes` to `path` atomically and durably (see the module header).
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let temporary = write_temporary(path, bytes)?;
    rename_durably(&temporary, path)
}

/// The temporary name `path` is written under before it is renamed over
/// it (removed on open if a crash left it).
fn temporary_path(path: &Path) -> PathBuf {
    let folder = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    folder.join(format!(".{name}.tmp"))
}

/// Writes `bytes` under `path`'s temporary name and fsyncs them; returns
/// that name.
fn write_temporary(path: &Path, bytes: &[u8]) -> Result<PathBuf, StoreError> {
    let temporary = temporary_path(path);
    let mut file = File::create(&temporary).map_err(io(&temporary))?;
    file.write_all(bytes).map_err(io(&temporary))?;
    file.sync_all().map_err(io(&temporary))?;
    Ok(temporary)
}

/// Renames a written temporary file over `path` and fsyncs the folder.
fn rename_durably(temporary: &Path, path: &Path) -> Result<(), StoreError> {
    let folder = path.parent().unwrap_or(Path::new("."));
    std::fs::rename(temporary, path).map_err(io(path))?;
    File::open(folder)
        .and_then(|dir| dir.sync_all())
        .map_err(io(folder))
}

/// A version written and fsynced under its temporary name, not yet in the
/// history: `Store::commit_staged` makes it a version and current. Dropped
/// uncommitted (the change failed after staging), its file is removed.
#[derive(Debug)]
pub struct StagedVersion {
    version: PolicyVersion,
    temporary: Option<PathBuf>,
}

impl Drop for StagedVersion {
    fn drop(&mut self) {
        if let Some(temporary) = self.temporary.take() {
            let _ = std::fs::remove_file(temporary);
        }
    }
}

impl Store {
    /// Opens (creating if needed) the store under `dir`, removing the
    /// temporary files a crash may have left.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let policy = dir.join("policy");
        std::fs::create_dir_all(&policy).map_err(io(&policy))?;
        for entry in std::fs::read_dir(&policy).map_err(io(&policy))?.flatten() {
            if entry.file_name().to_string_lossy().ends_with(".tmp") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    /// Writes a state file of another component (quarantine) under the
    /// state directory, as durably as a version.
    pub fn write_file(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        write_atomic(&self.dir.join(name), bytes)
    }

    /// Reads a state file written by `write_file`; None if there is none.
    pub fn read_file(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.dir.join(name);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path)(e)),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn version_path(&self, version: u64) -> PathBuf {
        self.dir.join("policy").join(format!("v{version:08}.json"))
    }

    /// Every stored version number, ascending.
    fn version_numbers(&self) -> Result<Vec<u64>, StoreError> {
        let folder = self.dir.join("policy");
        let mut numbers: Vec<u64> = std::fs::read_dir(&folder)
            .map_err(io(&folder))?
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_prefix('v')?.strip_suffix(".json")?.parse().ok()
            })
            .collect();
        numbers.sort_unstable();
        Ok(numbers)
    }

    /// A stored version.
    pub fn load(&self, version: u64) -> Result<PolicyVersion, StoreError> {
        let path = self.version_path(version);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NoVersion(version))
            }
            Err(e) => return Err(io(&path)(e)),
        };
        serde_json::from_slice(&bytes).map_err(|e| StoreError::Damaged {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    }

    /// The version in force, if any was ever applied.
    pub fn current(&self) -> Result<Option<PolicyVersion>, StoreError> {
        let path = self.dir.join("policy").join("current");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path)(e)),
        };
        let version = text.trim().parse().map_err(|_| StoreError::Damaged {
            path: path.display().to_string(),
            message: format!("`{}` is not a version number", text.trim()),
        })?;
        self.load(version).map(Some)
    }

    /// Stores `document` as the next version and makes it current.
    pub fn commit(
        &self,
        document: &PolicyDocument,
        author: &str,
        summary: &str,
    ) -> Result<PolicyVersion, StoreError> {
        let staged = self.stage(document, author, summary)?;
        self.commit_staged(staged)
    }

    /// The first half of `commit`, which may run while the document is
    /// compiled: writes and fsyncs the next version under a temporary name.
    /// Nothing is visible (history, `current`, a restart) until
    /// `commit_staged`. The caller keeps changes serialized (the engine's
    /// lock), so the version number stays free.
    pub fn stage(
        &self,
        document: &PolicyDocument,
        author: &str,
        summary: &str,
    ) -> Result<StagedVersion, StoreError> {
        let version = self.version_numbers()?.last().copied().unwrap_or(0) + 1;
        let stored = PolicyVersion {
            version,
            created_at: unix_now(),
            author: author.to_string(),
            summary: summary.to_string(),
            document: document.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&stored).map_err(|e| StoreError::Damaged {
            path: "policy".into(),
            message: e.to_string(),
        })?;
        let temporary = write_temporary(&self.version_path(version), &bytes)?;
        Ok(StagedVersion {
            version: stored,
            temporary: Some(temporary),
        })
    }

    /// The second half of `commit`: renames the staged version into the
    /// history, then points `current` at it.
    pub fn commit_staged(&self, mut staged: StagedVersion) -> Result<PolicyVersion, StoreError> {
        let version = staged.version.version;
        if let Some(temporary) = staged.temporary.take() {
            if let Err(e) = rename_durably(&temporary, &self.version_path(version)) {
                let _ = std::fs::remove_file(temporary);
                return Err(e);
            }
        }
        write_atomic(
            &self.dir.join("policy").join("current"),
            format!("{version}\n").as_bytes(),
        )?;
        Ok(staged.version.clone())
    }

    /// Every version, oldest first.
    pub fn history(&self) -> Result<Vec<VersionInfo>, StoreError> {
        self.version_numbers()?
            .into_iter()
            .map(|v| {
                self.load(v).map(|p| VersionInfo {
                    version: p.version,
                    created_at: p.created_at,
                    author: p.author,
                    summary: p.summary,
                })
            })
            .collect()
    }

    /// Appends to the audit trail (one JSON line, fsynced).
    pub fn audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let path = self.dir.join("audit.jsonl");
        let mut line = serde_json::to_vec(entry).map_err(|e| StoreError::Damaged {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        line.push(b'\n');
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        file.write_all(&line).map_err(io(&path))?;
        file.sync_all().map_err(io(&path))
    }

    /// The audit trail, oldest first (a torn last line is skipped).
    pub fn audit_trail(&self) -> Result<Vec<AuditEntry>, StoreError> {
        let path = self.dir.join("audit.jsonl");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&path)(e)),
        };
        Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            let path =
                std::env::temp_dir().join(format!("microseg-store-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            Self(path)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn document(default_allow: bool, workloads: usize) -> PolicyDocument {
        PolicyDocument {
            workloads: (0..workloads)
                .map(|i| crate::policy::Workload {
                    name: format!("w{i}"),
                    addresses: vec![format!("10.1.{}.{}", i / 250, i % 250 + 1)],
                    labels: Default::default(),
                })
                .collect(),
            default_action: if default_allow {
                crate::policy::ActionName::Allow
            } else {
                crate::policy::ActionName::Deny
            },
            ..PolicyDocument::default()
        }
    }

    #[test]
    fn versions_history_and_current_survive_reopening() {
        let scratch = Scratch::new("versions");
        let store = Store::open(&scratch.0).expect("open");
        assert_eq!(store.current().expect("reads"), None);
        let first = store
            .commit(&document(false, 1), "admin", "apply")
            .expect("commit");
        let second = store
            .commit(&document(true, 2), "ops", "apply")
            .expect("commit");
        assert_eq!((first.version, second.version), (1, 2));
        store
            .audit(&AuditEntry {
                time: 1,
                who: "admin".into(),
                action: "apply".into(),
                version: Some(2),
                detail: "+1 workload".into(),
            })
            .expect("audit");
        drop(store);

        let store = Store::open(&scratch.0).expect("reopen");
        let current = store.current().expect("reads").expect("a version");
        assert_eq!(current, second);
        assert_eq!(store.load(1).expect("v1"), first);
        let history = store.history().expect("history");
        assert_eq!(
            history.iter().map(|v| v.version).collect::<Vec<_>>(),
            [1, 2]
        );
        assert_eq!(history[1].author, "ops");
        assert!(matches!(store.load(7), Err(StoreError::NoVersion(7))));
        let trail = store.audit_trail().expect("trail");
        assert_eq!(trail.len(), 1);
        assert_eq!(trail[0].detail, "+1 workload");
    }

    #[test]
    fn a_staged_version_is_invisible_until_committed_and_gone_if_dropped() {
        let scratch = Scratch::new("staged");
        let store = Store::open(&scratch.0).expect("open");
        let first = store
            .commit(&document(false, 1), "admin", "apply")
            .expect("commit");
        let files = |store: &Store| {
            std::fs::read_dir(store.dir().join("policy"))
                .expect("policy folder")
                .count()
        };
        let before = files(&store);

        // Staged and dropped (the compilation failed): nothing changed.
        let staged = store
            .stage(&document(true, 2), "admin", "apply")
            .expect("stage");
        assert_eq!(files(&store), before + 1, "the staged file is on disk");
        assert_eq!(store.history().expect("history").len(), 1);
        assert_eq!(store.current().expect("reads"), Some(first.clone()));
        drop(staged);
        assert_eq!(files(&store), before);
        assert_eq!(store.current().expect("reads"), Some(first.clone()));

        // Staged, then a crash (the file is left): reopening removes it
        // and the version in force is still the first.
        let staged = store
            .stage(&document(true, 3), "admin", "apply")
            .expect("stage");
        std::mem::forget(staged);
        let store = Store::open(&scratch.0).expect("reopen");
        assert_eq!(files(&store), before);
        assert_eq!(store.current().expect("reads"), Some(first));

        // Staged and committed: the next version, current.
        let staged = store
            .stage(&document(true, 4), "ops", "apply")
            .expect("stage");
        let second = store.commit_staged(staged).expect("commit");
        assert_eq!(second.version, 2);
        assert_eq!(store.current().expect("reads"), Some(second));
        assert_eq!(files(&store), before + 1);
    }

    #[test]
    fn leftovers_of_a_crash_are_ignored_and_damage_is_named() {
        let scratch = Scratch::new("leftovers");
        let store = Store::open(&scratch.0).expect("open");
        store
            .commit(&document(false, 1), "admin", "apply")
            .expect("commit");
        // A crash mid-write leaves a temporary file: not a version.
        let torn = scratch.0.join("policy").join(".v00000002.json.tmp");
        std::fs::write(&torn, b"{\"version\": 2, \"docu").expect("write");
        let store = Store::open(&scratch.0).expect("reopen");
        assert!(!torn.exists(), "temporary files are removed on open");
        assert_eq!(store.current().expect("reads").map(|v| v.version), Some(1));
        assert_eq!(
            store
                .commit(&document(true, 1), "a", "s")
                .expect("commit")
                .version,
            2
        );
        // A damaged version file is reported, not silently skipped.
        std::fs::write(store.version_path(2), b"{not json").expect("write");
        let err = store.current().expect_err("damaged").to_string();
        assert!(err.contains("v00000002.json is damaged"), "{err}");
    }

    /// Run as a child by `a_kill_mid_write_never_loses_the_previous_version`:
    /// commits large versions in a loop until killed, or for a minute at
    /// most (a parent that died before killing it, say of a closed output
    /// pipe, must not leave it writing for ever).
    #[test]
    fn store_writer_child() {
        let Some(dir) = std::env::var_os("MICROSEG_STORE_WRITER") else {
            return;
        };
        let store = Store::open(Path::new(&dir)).expect("open");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        for round in (0..).take_while(|_| std::time::Instant::now() < deadline) {
            store
                .commit(
                    &document(round % 2 == 0, 3000),
                    "writer",
                    &format!("round {round}"),
                )
                .expect("commit");
        }
    }

    #[test]
    fn a_kill_mid_write_never_loses_the_previous_version() {
        let scratch = Scratch::new("kill");
        let store = Store::open(&scratch.0).expect("open");
        store
            .commit(&document(false, 3000), "setup", "first")
            .expect("commit");
        let exe = std::env::current_exe().expect("test binary");
        for attempt in 0..5u64 {
            let mut child = std::process::Command::new(&exe)
                .args(["--exact", "store::tests::store_writer_child", "--nocapture"])
                .env("MICROSEG_STORE_WRITER", &scratch.0)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("spawn writer");
            // Let it get into its loop, then kill it at an arbitrary moment.
            std::thread::sleep(std::time::Duration::from_millis(150 + attempt * 37));
            child.kill().expect("kill");
            child.wait().expect("reap");
            let store = Store::open(&scratch.0).expect("reopen after the kill");
            let current = store
                .current()
                .expect("current is readable")
                .expect("a version");
            assert_eq!(current.document.workloads.len(), 3000, "complete document");
            for info in store.history().expect("every version readable") {
                assert!(info.version <= current.version || info.version == current.version + 1);
            }
        }
        let history = store.history().expect("history");
        assert!(
            history.len() > 2,
            "the writer committed versions: {}",
            history.len()
        );
    }
}
