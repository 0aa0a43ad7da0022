//! Transparent huge pages for the appliance's big tables, without
//! `unsafe`.
//!
//! Why: with a million connections every frame's conntrack lookup touches
//! a random line of a table of ~120 MB. On 4 KiB pages that is a TLB miss
//! per frame, and a page walk in a virtual machine is nested (guest and
//! host tables): the worker's slot prefetches waited on the page walkers,
//! 47% of its userspace time. Backed by 2 MiB pages the table's forwarding
//! rate rose 4.9% (docs/performance-notes.md, "Huge pages for the tables,
//! measured again").
//!
//! How: glibc's malloc advises the kernel to back its memory with huge
//! pages (`madvise(MADV_HUGEPAGE)`, which takes effect where the system's
//! THP mode is `always` or `madvise`) when the tunable
//! `glibc.malloc.hugetlb=1` is set, and tunables are read only when a
//! process starts. So `microseg run` starts itself again, once, with the
//! tunable added to `GLIBC_TUNABLES` (`exec`: the same process id).
//! Whoever sets `glibc.malloc.hugetlb` themselves keeps their value;
//! `GLIBC_TUNABLES=glibc.malloc.hugetlb=0` turns this off.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

/// The environment variable glibc reads its tunables from.
pub const TUNABLES_VAR: &str = "GLIBC_TUNABLES";

/// The tunable, without its value.
const HUGETLB: &[u8] = b"glibc.malloc.hugetlb";

/// The value `tunables` (a `GLIBC_TUNABLES` text) gives
/// `glibc.malloc.hugetlb`, if it names it.
fn hugetlb_value(tunables: &[u8]) -> Option<&[u8]> {
    tunables.split(|byte| *byte == b':').find_map(|tunable| {
        let value = tunable.strip_prefix(HUGETLB)?;
        value.strip_prefix(b"=")
    })
}

/// What `GLIBC_TUNABLES` should be for huge pages, given its value now;
/// `None` when it already says something about `glibc.malloc.hugetlb`
/// (left as the user set it, and so no second start).
pub fn tunables_with_huge_pages(current: Option<&OsStr>) -> Option<OsString> {
    let current = current.map(OsStr::as_bytes).unwrap_or_default();
    if hugetlb_value(current).is_some() {
        return None;
    }
    let mut tunables = current.to_vec();
    if !tunables.is_empty() {
        tunables.push(b':');
    }
    tunables.extend_from_slice(HUGETLB);
    tunables.extend_from_slice(b"=1");
    Some(OsString::from_vec(tunables))
}

/// Kibibytes of anonymous memory on transparent huge pages, from the text
/// of `/proc/self/smaps_rollup`.
pub fn anon_huge_kib(smaps_rollup: &str) -> Option<u64> {
    smaps_rollup.lines().find_map(|line| {
        let value = line.strip_prefix("AnonHugePages:")?;
        value.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

/// The system's THP mode (`always`, `madvise` or `never`), from the text
/// of `/sys/kernel/mm/transparent_hugepage/enabled`, where the chosen one
/// is in brackets.
pub fn thp_mode(enabled: &str) -> Option<&str> {
    let start = enabled.find('[')? + 1;
    let end = start + enabled[start..].find(']')?;
    Some(&enabled[start..end])
}

/// One line for the log: how much of the process is on huge pages, and
/// why none is where the system does not allow them.
pub fn report() -> String {
    let on_huge = std::fs::read_to_string("/proc/self/smaps_rollup")
        .ok()
        .as_deref()
        .and_then(anon_huge_kib);
    let mode = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").ok();
    let mode = mode.as_deref().and_then(thp_mode).unwrap_or("unknown");
    let tunables = std::env::var_os(TUNABLES_VAR).unwrap_or_default();
    let setting = match hugetlb_value(tunables.as_bytes()) {
        Some(value) => format!("glibc.malloc.hugetlb={}", String::from_utf8_lossy(value)),
        None => "glibc.malloc.hugetlb unset".to_string(),
    };
    match on_huge {
        Some(kib) => format!(
            "{} MiB on transparent huge pages (THP mode {mode}, {setting})",
            kib / 1024
        ),
        None => {
            format!("huge pages unknown (no /proc/self/smaps_rollup; THP mode {mode}, {setting})")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tunables(current: Option<&str>) -> Option<String> {
        tunables_with_huge_pages(current.map(OsStr::new))
            .map(|value| value.into_string().expect("UTF-8"))
    }

    #[test]
    fn the_tunable_is_added_once_and_a_users_own_setting_wins() {
        assert_eq!(tunables(None).as_deref(), Some("glibc.malloc.hugetlb=1"));
        assert_eq!(
            tunables(Some("")).as_deref(),
            Some("glibc.malloc.hugetlb=1")
        );
        assert_eq!(
            tunables(Some("glibc.malloc.arena_max=2")).as_deref(),
            Some("glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1")
        );
        // Set already, by us (the second start) or by the user: left alone.
        assert_eq!(tunables(Some("glibc.malloc.hugetlb=1")), None);
        assert_eq!(tunables(Some("glibc.malloc.hugetlb=0")), None);
        assert_eq!(
            tunables(Some("glibc.malloc.arena_max=2:glibc.malloc.hugetlb=2")),
            None
        );
        // A tunable whose name only begins the same is another one.
        assert_eq!(
            tunables(Some("glibc.malloc.hugetlbx=0")).as_deref(),
            Some("glibc.malloc.hugetlbx=0:glibc.malloc.hugetlb=1")
        );
    }

    #[test]
    fn the_reports_numbers_are_read_from_procfs_and_sysfs_text() {
        let rollup = "Rss:              365408 kB\nAnonHugePages:    245760 kB\nSwap: 0 kB\n";
        assert_eq!(anon_huge_kib(rollup), Some(245_760));
        assert_eq!(anon_huge_kib("Rss: 1 kB\n"), None);
        assert_eq!(anon_huge_kib("AnonHugePages: lots\n"), None);
        assert_eq!(thp_mode("always [madvise] never\n"), Some("madvise"));
        assert_eq!(thp_mode("[always] madvise never\n"), Some("always"));
        assert_eq!(thp_mode("always madvise never\n"), None);
        assert_eq!(
            hugetlb_value(b"a=1:glibc.malloc.hugetlb=0"),
            Some(&b"0"[..])
        );
        assert_eq!(hugetlb_value(b"glibc.malloc.hugetlbx=1"), None);
    }
}
