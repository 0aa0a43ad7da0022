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
//! THP mode is `madvise`; under `always` every mapping gets them anyway)
//! when the tunable `glibc.malloc.hugetlb=1` is set, and tunables are read
//! only when a process starts. So `microseg run` starts itself again with
//! the tunable added to `GLIBC_TUNABLES` (`exec`: the same process id).
//! Whoever sets `glibc.malloc.hugetlb` themselves keeps their value;
//! `GLIBC_TUNABLES=glibc.malloc.hugetlb=0` turns this off.
//!
//! Why it may take more than one start: glibc up to 2.37 (Debian 12 has
//! 2.36) compares the THP mode it reads from sysfs (23 bytes) as a C
//! string without terminating it, so the 24th byte of its buffer is
//! whatever the stack held there, which changes from one start to the
//! next. When that byte is not zero, malloc concludes that the system has
//! no THP and never advises: on the testbed machine 7 of 17 starts ran on
//! 4 KiB pages (docs/performance-notes.md, "Huge pages only on some
//! starts"). So each start checks that malloc did advise a probe
//! allocation (its mapping's `hg` flag in `/proc/self/smaps`) and, if not,
//! starts again, up to [`MAX_STARTS`] times (`next_start`).

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

/// Does `tunables` (a `GLIBC_TUNABLES` text) turn malloc's huge-page
/// advice on (`glibc.malloc.hugetlb=1`)?
fn asks_for_huge_pages(tunables: &[u8]) -> bool {
    hugetlb_value(tunables) == Some(&b"1"[..])
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

/// The environment variable counting the starts made for huge pages:
/// absent at the first start (then a `glibc.malloc.hugetlb` in
/// `GLIBC_TUNABLES` is the user's own), 1 after the first start again.
pub const STARTS_VAR: &str = "MICROSEG_HUGE_PAGE_STARTS";

/// Starts again for huge pages at most. With about half of the starts
/// failing (glibc's bug, module header), sixteen leave about one run in
/// 65,536 on 4 KiB pages; a start takes a few milliseconds.
pub const MAX_STARTS: u32 = 16;

/// Bytes of the probe allocation: above malloc's threshold for a mapping
/// of its own and above a huge page, so that glibc advises it if it
/// advises anything.
const PROBE_BYTES: usize = 4 << 20;

/// What a start of `microseg run` does about huge pages.
#[derive(Debug, PartialEq, Eq)]
pub enum NextStart {
    /// Go on as this process is.
    Run,
    /// Start again (`exec`) with `GLIBC_TUNABLES` set to `tunables` and
    /// [`STARTS_VAR`] to `starts`.
    Again { tunables: OsString, starts: u32 },
    /// malloc did not advise huge pages in `starts` starts: go on, on
    /// 4 KiB pages, and say so.
    GiveUp { starts: u32 },
}

/// Decides what this start does, from `GLIBC_TUNABLES` (`tunables`), the
/// starts made so far ([`STARTS_VAR`], `None` if absent), the system's THP
/// mode and, only when it matters, whether malloc advises huge pages in
/// this process (`malloc_advises`, `None`: cannot tell).
///
/// Only the `madvise` mode needs the advice: under `always` every mapping
/// gets huge pages and glibc does not advise; under `never` nothing can.
pub fn next_start(
    tunables: Option<&OsStr>,
    starts: Option<u32>,
    thp_mode: Option<&str>,
    malloc_advises: impl FnOnce() -> Option<bool>,
) -> NextStart {
    if thp_mode != Some("madvise") {
        return NextStart::Run;
    }
    let Some(starts) = starts else {
        return match tunables_with_huge_pages(tunables) {
            Some(tunables) => NextStart::Again {
                tunables,
                starts: 1,
            },
            None => NextStart::Run,
        };
    };
    let ours = tunables.is_some_and(|value| asks_for_huge_pages(value.as_bytes()));
    if !ours || malloc_advises() != Some(false) {
        return NextStart::Run;
    }
    if starts >= MAX_STARTS {
        return NextStart::GiveUp { starts };
    }
    NextStart::Again {
        tunables: tunables.map(OsStr::to_os_string).unwrap_or_default(),
        starts: starts + 1,
    }
}

/// Does malloc advise huge pages in this process? Allocates a probe and
/// reads its mapping's flags in `/proc/self/smaps` (`None` if unreadable).
pub fn malloc_advises() -> Option<bool> {
    let probe = std::hint::black_box(vec![0u8; PROBE_BYTES]);
    let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
    mapping_advised(&smaps, probe.as_ptr() as usize)
}

/// Is the mapping holding `address` advised for huge pages (flag `hg` in
/// its `VmFlags` line), from the text of `/proc/<pid>/smaps`? `None` if no
/// mapping holds it, or it has no `VmFlags` line.
pub fn mapping_advised(smaps: &str, address: usize) -> Option<bool> {
    let mut inside = false;
    for line in smaps.lines() {
        if let Some((start, end)) = mapping_range(line) {
            inside = (start..end).contains(&address);
        } else if inside {
            if let Some(flags) = line.strip_prefix("VmFlags:") {
                return Some(flags.split_whitespace().any(|flag| flag == "hg"));
            }
        }
    }
    None
}

/// The address range of an smaps header line (`7f00-7f10 rw-p ...`).
fn mapping_range(line: &str) -> Option<(usize, usize)> {
    let range = line.split_whitespace().next()?;
    let (start, end) = range.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    Some((start, end))
}

/// The system's THP mode, read from sysfs.
pub fn system_thp_mode() -> Option<String> {
    let enabled = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").ok()?;
    thp_mode(&enabled).map(str::to_string)
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
    let mode = system_thp_mode();
    let mode = mode.as_deref().unwrap_or("unknown");
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

    fn decide(
        tunables: Option<&str>,
        starts: Option<u32>,
        mode: &str,
        advises: Option<bool>,
    ) -> NextStart {
        next_start(tunables.map(OsStr::new), starts, Some(mode), || advises)
    }

    fn again(tunables: &str, starts: u32) -> NextStart {
        NextStart::Again {
            tunables: tunables.into(),
            starts,
        }
    }

    #[test]
    fn a_start_without_the_advice_starts_again_up_to_the_limit() {
        let ours = Some("glibc.malloc.hugetlb=1");
        // First start: the tunable is added, whatever malloc does now.
        let never_asked = || -> Option<bool> { panic!("the first start has nothing to check") };
        assert_eq!(
            next_start(None, None, Some("madvise"), never_asked),
            again("glibc.malloc.hugetlb=1", 1)
        );
        assert_eq!(
            decide(
                Some("glibc.malloc.arena_max=2"),
                None,
                "madvise",
                Some(false)
            ),
            again("glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1", 1)
        );
        // Later starts: again while malloc does not advise, with the same tunables.
        assert_eq!(decide(ours, Some(1), "madvise", Some(true)), NextStart::Run);
        assert_eq!(
            decide(ours, Some(1), "madvise", Some(false)),
            again("glibc.malloc.hugetlb=1", 2)
        );
        assert_eq!(
            decide(ours, Some(MAX_STARTS - 1), "madvise", Some(false)),
            again("glibc.malloc.hugetlb=1", MAX_STARTS)
        );
        assert_eq!(
            decide(ours, Some(MAX_STARTS), "madvise", Some(false)),
            NextStart::GiveUp { starts: MAX_STARTS }
        );
        // Cannot tell: go on rather than start again without end.
        assert_eq!(decide(ours, Some(1), "madvise", None), NextStart::Run);
    }

    #[test]
    fn a_users_setting_or_a_mode_without_advice_means_no_start_again() {
        for mode in ["always", "never"] {
            assert_eq!(
                decide(None, None, mode, Some(false)),
                NextStart::Run,
                "{mode}"
            );
        }
        assert_eq!(next_start(None, None, None, || Some(false)), NextStart::Run);
        for setting in ["glibc.malloc.hugetlb=0", "glibc.malloc.hugetlb=1"] {
            assert_eq!(
                decide(Some(setting), None, "madvise", Some(false)),
                NextStart::Run
            );
        }
        // The count is there but the tunable is no longer ours.
        assert_eq!(
            decide(
                Some("glibc.malloc.hugetlb=0"),
                Some(1),
                "madvise",
                Some(false)
            ),
            NextStart::Run
        );
    }

    #[test]
    fn the_advice_is_read_from_the_flags_of_the_mapping_holding_the_address() {
        let smaps = "\
7f0000000000-7f0000400000 rw-p 00000000 00:00 0
Size:               4096 kB
VmFlags: rd wr mr mw me ac hg
7f0000400000-7f0000800000 rw-p 00000000 00:00 0 
Size:               4096 kB
THPeligible:    0
VmFlags: rd wr mr mw me ac
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]
Size:                132 kB
";
        assert_eq!(mapping_advised(smaps, 0x7f00_0000_0000), Some(true));
        assert_eq!(mapping_advised(smaps, 0x7f00_003f_ffff), Some(true));
        assert_eq!(mapping_advised(smaps, 0x7f00_0040_0000), Some(false));
        assert_eq!(
            mapping_advised(smaps, 0x7f00_0080_0000),
            None,
            "between mappings"
        );
        assert_eq!(
            mapping_advised(smaps, 0x7ffd_0000_0010),
            None,
            "no VmFlags line"
        );
        assert_eq!(mapping_advised("", 1), None);
    }

    #[test]
    fn this_process_can_tell_whether_malloc_advises() {
        // The test binary runs without the tunable, so malloc advises
        // nothing where the mode is `madvise`; elsewhere only an answer is
        // asked for.
        let advises = malloc_advises();
        assert!(
            advises.is_some(),
            "the probe's mapping was not found in /proc/self/smaps"
        );
        let ours = std::env::var_os(TUNABLES_VAR)
            .is_some_and(|value| asks_for_huge_pages(value.as_bytes()));
        if system_thp_mode().as_deref() == Some("madvise") && !ours {
            assert_eq!(advises, Some(false));
        }
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
