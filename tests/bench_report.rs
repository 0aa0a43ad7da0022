//! `benches/report.py render`, the generator of docs/benchmarks.md, run
//! on the fixture results in tests/fixtures/bench/ (a small but realistic
//! run, with a few distinctive values). It must write every section and
//! figure, compute the targets from the data (the fixtures hold one met and
//! one missed target of each kind checked here), refuse a missing or
//! malformed input by naming it without writing anything, and say "not
//! measured" for a missing optional input. Needs python3 and gnuplot.
//! Also: `benches/testbed/run.sh` refuses a bad setting before doing
//! anything, and `benches/testbed/ab.py` pairs the two sides of an A/B
//! run.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

fn repo() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// Runs `python3 SCRIPT ARGS…` from the repository's root (`script` is a
/// path in it).
fn python(script: &str, args: &[&OsStr]) -> Output {
    Command::new("python3")
        .current_dir(repo())
        .arg(script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run python3 {script}: {e}"))
}

/// A scratch folder holding a copy of the fixtures, removed on drop (also
/// when an assertion fails).
#[derive(Debug)]
struct Scratch(PathBuf);

impl Scratch {
    fn with_fixtures() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "microseg-bench-report-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the scratch folder");
        let scratch = Self(dir);
        let fixtures = repo().join("tests/fixtures/bench");
        for entry in std::fs::read_dir(&fixtures).expect("tests/fixtures/bench") {
            let path = entry.expect("a fixture").path();
            let name = path.file_name().expect("a file name");
            std::fs::copy(&path, scratch.0.join(name)).expect("copy a fixture");
        }
        scratch
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn markdown(&self) -> PathBuf {
        self.file("benchmarks.md")
    }

    /// Runs the generator on this folder: data, figures and the markdown
    /// all in it.
    fn render(&self) -> Output {
        let markdown = self.markdown();
        python(
            "benches/report.py",
            &[
                "render".as_ref(),
                "--data".as_ref(),
                self.0.as_os_str(),
                "--out".as_ref(),
                markdown.as_os_str(),
                "--figures".as_ref(),
                self.0.as_os_str(),
            ],
        )
    }

    /// Renders, expecting success; returns the markdown.
    fn render_ok(&self) -> String {
        let out = self.render();
        assert!(
            out.status.success(),
            "report.py render failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read_to_string(self.markdown()).expect("the markdown was written")
    }

    /// Runs `benches/testbed/summarize.py` on this folder's testbed.csv
    /// and returns the testbed.md it wrote.
    fn summarize(&self) -> String {
        let (csv, md) = (self.file("testbed.csv"), self.file("testbed.md"));
        let out = python(
            "benches/testbed/summarize.py",
            &[csv.as_os_str(), md.as_os_str()],
        );
        assert!(
            out.status.success(),
            "summarize.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read_to_string(&md).expect("testbed.md was written")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const SECTIONS: [&str; 6] = [
    "## 1. Packet parser and pipeline",
    "## 2. Classifier",
    "## 3. Connection tracking",
    "## 4. Switch throughput",
    "## 5. Added latency",
    "## 6. Policy compile and swap",
];

/// The text of the section whose heading starts with `heading`, up to the
/// next `## ` heading.
fn section<'a>(md: &'a str, heading: &str) -> &'a str {
    let start = md
        .find(&format!("\n{heading}"))
        .unwrap_or_else(|| panic!("no section {heading:?} in:\n{md}"));
    let rest = &md[start + 1..];
    match rest[3..].find("\n## ") {
        Some(end) => &rest[..end + 3],
        None => rest,
    }
}

/// The table row of `text` whose first cell starts with `first`.
fn row<'a>(text: &'a str, first: &str) -> &'a str {
    text.lines()
        .find(|line| line.starts_with(&format!("| {first}")))
        .unwrap_or_else(|| panic!("no row starting with {first:?} in:\n{text}"))
}

/// The line of `text` that starts with `prefix`.
fn line_starting<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.lines()
        .find(|line| line.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{text}"))
}

/// The last cell of a table row.
fn last_cell(row: &str) -> &str {
    row.trim_end_matches('|')
        .rsplit('|')
        .next()
        .unwrap_or_default()
        .trim()
}

/// The targets of `image](target)` links.
fn image_links(md: &str) -> Vec<String> {
    md.split("![")
        .skip(1)
        .map(|rest| {
            let open = rest.find("](").expect("an image link target");
            let close = rest[open..].find(')').expect("a closing parenthesis");
            rest[open + 2..open + close].to_string()
        })
        .collect()
}

#[test]
fn every_section_table_target_and_figure_comes_from_the_data() {
    let scratch = Scratch::with_fixtures();
    let md = scratch.render_ok();
    assert!(md.starts_with("# microseg benchmarks\n"), "{md}");
    assert!(md.contains("do not edit by hand"), "{md}");
    assert!(md.contains("`f1x7ure`"), "the fixture's commit:\n{md}");
    for heading in SECTIONS {
        section(&md, heading);
    }

    // Distinctive fixture values, in the tables they belong to.
    let pipeline = section(&md, SECTIONS[0]);
    let established = row(pipeline, "pipeline, established TCP");
    assert!(
        established.contains("| 144 ns |"),
        "9216 ns / 64 frames: {established}"
    );
    let classifier = section(&md, SECTIONS[1]);
    assert!(
        row(classifier, "acl1_10k |").contains("| 71.3 ns |"),
        "{classifier}"
    );
    let latency = section(&md, SECTIONS[4]);
    let idle = row(
        latency,
        "microseg, 0 rules, conntrack (adaptive poll) | idle |",
    );
    assert!(idle.contains("| 43.7 |"), "{idle}");
    let added = row(latency, "idle |");
    assert!(added.contains("| +12.3 |"), "43.7 - 31.4: {added}");

    // Targets computed from the fixtures: met and not met (section, row,
    // verdict, the fixture numbers behind it).
    let targets = [
        (1, "acl1_10k: single lookup ≤ 100 ns", "met", "71.3 ns"),
        (
            1,
            "fw1_10k: single lookup ≤ 57 ns",
            "**not met**",
            "61.7 ns",
        ),
        (
            2,
            "hit ≤ 50 ns median at 1M entries: hot, 2 threads",
            "met",
            "47.7 ns",
        ),
        (
            5,
            "swap ≤ 50 ms for the 10k-rule policy (acl1_10k): first push",
            "**not met**",
            "77.7 ms",
        ),
        (
            5,
            "swap ≤ 50 ms for the 10k-rule policy (acl1_10k): edit",
            "met",
            "41.9 ms",
        ),
        (
            3,
            "microseg with the XDP fast path (acl1 10k) ≥ kernel forwarding without rules, few",
            "met",
            "1.848 vs 0.878",
        ),
        (
            3,
            "microseg with the XDP fast path (acl1 10k) ≥ kernel forwarding without rules, many",
            "**not met**",
            "0.839 vs 0.848",
        ),
        (
            3,
            "microseg, acl1 10k, conntrack ≥ 90% of bare AF_XDP, few",
            "met",
            "0.649 vs 0.712",
        ),
        (
            3,
            "microseg, acl1 10k, conntrack ≥ 90% of bare AF_XDP, many",
            "**not met**",
            "0.483 vs 0.717",
        ),
    ];
    for (index, target, verdict, numbers) in targets {
        let line = row(section(&md, SECTIONS[index]), target);
        assert_eq!(last_cell(line), verdict, "{numbers}: {line}");
    }
    // Conntrack hits: batched, with the one-at-a-time figure beside it.
    let conntrack = section(&md, SECTIONS[2]);
    let hot = row(
        conntrack,
        "hit ≤ 50 ns median at 1M entries: hot, 2 threads",
    );
    assert!(hot.contains("47.7 ns (one at a time: 57.2 ns)"), "{hot}");
    let million = row(conntrack, "1,000,000 | 1 |");
    assert!(
        million.contains("| 289 ns | 72.2 ns | 549 ns |"),
        "{million}"
    );

    // Every figure: an SVG beside its data, both linked from the page.
    let links = image_links(&md);
    assert_eq!(
        links.len(),
        5,
        "one figure per section but the first: {links:?}"
    );
    for link in links {
        let svg = scratch.0.join(&link);
        let text = std::fs::read_to_string(&svg)
            .unwrap_or_else(|e| panic!("figure {link} ({}): {e}", svg.display()));
        assert!(text.contains("<svg"), "{link} is not an SVG");
        let name = Path::new(&link)
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("a figure name");
        let data = scratch.file(&format!("fig-{name}.csv"));
        assert!(data.is_file(), "no {}", data.display());
        assert!(md.contains(&format!("fig-{name}.csv` (from ")), "{md}");
        assert!(md.contains(&format!("`benches/figures/{name}.gp`")), "{md}");
    }
}

#[test]
fn a_missing_required_input_is_named_and_nothing_is_written() {
    let scratch = Scratch::with_fixtures();
    std::fs::remove_file(scratch.file("classifier.csv")).expect("remove classifier.csv");
    let out = scratch.render();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("classifier.csv"), "{stderr}");
    assert!(
        stderr.contains("make bench"),
        "says which step writes it: {stderr}"
    );
    assert!(!scratch.markdown().exists(), "a markdown was written");
    let svgs = std::fs::read_dir(&scratch.0)
        .expect("the scratch folder")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "svg"))
        })
        .count();
    assert_eq!(svgs, 0, "figures were drawn");
}

#[test]
fn a_field_that_is_not_a_number_is_named_with_its_file_line_and_column() {
    let scratch = Scratch::with_fixtures();
    let path = scratch.file("conntrack.csv");
    let text = std::fs::read_to_string(&path).expect("conntrack.csv");
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let mut fields: Vec<&str> = lines[2].split(',').collect();
    fields[3] = "fast"; // hit_hot_ns of the third line
    lines[2] = fields.join(",");
    std::fs::write(&path, lines.join("\n") + "\n").expect("write conntrack.csv");

    let out = scratch.render();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("conntrack.csv: line 3"), "{stderr}");
    assert!(stderr.contains("hit_hot_ns"), "{stderr}");
    assert!(stderr.contains("'fast' is not a number"), "{stderr}");
    assert!(!scratch.markdown().exists(), "a markdown was written");
}

#[test]
fn without_latency_results_the_section_says_not_measured() {
    let scratch = Scratch::with_fixtures();
    std::fs::remove_file(scratch.file("latency.csv")).expect("remove latency.csv");
    let md = scratch.render_ok();
    let latency = section(&md, SECTIONS[4]);
    assert!(latency.contains("Not measured in this run"), "{latency}");
    assert!(latency.contains("latency.csv"), "{latency}");
    assert!(!md.contains("latency.svg"), "{md}");
    assert_eq!(image_links(&md).len(), 4);
}

/// The header: the run's start and end from machine.json (`report.py
/// finish` records the end); the switch's sections measured apart
/// (`make bench-testbed`, testbed-machine.json of another commit or
/// start) named with their own run, and not named when the file is the
/// full run's own.
#[test]
fn the_header_names_the_run_of_the_switch_sections_when_it_was_another() {
    let scratch = Scratch::with_fixtures();
    let finish = |file: &str, at: &str| {
        let path = scratch.file(file);
        let out = python(
            "benches/report.py",
            &[
                "finish".as_ref(),
                "--file".as_ref(),
                path.as_os_str(),
                "--at".as_ref(),
                at.as_ref(),
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    finish("machine.json", "2026-11-20T08:31:00Z");
    let machine = std::fs::read_to_string(scratch.file("machine.json")).expect("machine.json");
    std::fs::write(scratch.file("testbed-machine.json"), &machine).expect("write");
    let md = scratch.render_ok();
    let run_line = line_starting(&md, "- **Run**");
    assert!(
        run_line.contains("started 2026-11-20 08:00 UTC, finished 2026-11-20 08:31 UTC"),
        "{run_line}"
    );
    assert!(!md.contains("Sections 4 and 5"), "the same run:\n{md}");

    let later = machine
        .replace("f1x7ure", "5w17ch1")
        .replace("2026-11-20T08:00:00Z", "2026-11-21T10:00:00Z")
        .replace("2026-11-20T08:31:00Z", "2026-11-21T10:16:00Z");
    std::fs::write(scratch.file("testbed-machine.json"), later).expect("write");
    let md = scratch.render_ok();
    let switch_line = line_starting(&md, "- **Sections 4 and 5**");
    assert!(switch_line.contains("`5w17ch1`"), "{switch_line}");
    assert!(
        switch_line.contains("started 2026-11-21 10:00 UTC, finished 2026-11-21 10:16 UTC"),
        "{switch_line}"
    );
    assert!(line_starting(&md, "- **Commit**").contains("`f1x7ure`"));
    assert!(
        !switch_line.contains("on kernel"),
        "the same kernel: {switch_line}"
    );
    assert!(
        !md.contains("measured on another machine"),
        "the same machine:\n{md}"
    );

    // Edits the switch run's machine file, renders, and returns the page
    // and its "Sections 4 and 5" line.
    let switch_machine_edited = |from: &str, to: &str| {
        let path = scratch.file("testbed-machine.json");
        let text = std::fs::read_to_string(&path).expect("testbed-machine.json");
        std::fs::write(&path, text.replace(from, to)).expect("write");
        let md = scratch.render_ok();
        let line = line_starting(&md, "- **Sections 4 and 5**").to_string();
        (md, line)
    };

    // A switch run on another kernel names it.
    let (_, switch_line) = switch_machine_edited(FIXTURE_KERNEL, "6.99.0-other");
    assert!(
        switch_line.contains("`5w17ch1`, on kernel 6.99.0-other, started"),
        "{switch_line}"
    );

    // A switch run on another host names the host: its rates are not
    // comparable with the other sections'.
    let (md, switch_line) = switch_machine_edited(FIXTURE_CPU, "Other Vendor CPU");
    assert!(
        switch_line.contains(
            "`5w17ch1`, on another machine (2 × Other Vendor CPU, 23.5 GiB RAM, kernel 6.99.0-other), started"
        ),
        "{switch_line}"
    );
    assert!(
        line_starting(&md, "- **Machine**").contains(FIXTURE_CPU),
        "the main run's machine stays in its line"
    );
    let scale = line_starting(section(&md, SECTIONS[0]), "For scale:");
    assert!(
        scale.contains("measured on another machine"),
        "section 1 compares with section 4's run: {scale}"
    );
}

/// The CPU named in the fixtures' machine.json.
const FIXTURE_CPU: &str = "Fixture EPYC 7B13";

/// The kernel named in the fixtures' machine.json.
const FIXTURE_KERNEL: &str = "6.18.44-fixture";

/// run.sh's latency rows: `ping -n` output reduced to sent, received,
/// median, p99 (nearest rank), mean and max, in µs; no reply leaves the
/// times empty.
#[test]
fn ping_statistics_come_from_the_replies() {
    let ping_stats = |sent: &str, output: &str| -> String {
        use std::io::Write;
        let mut child = Command::new("python3")
            .arg(repo().join("benches/testbed/ping_stats.py"))
            .arg(sent)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("run python3 benches/testbed/ping_stats.py");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(output.as_bytes())
            .expect("write ping output");
        let out = child.wait_with_output().expect("ping_stats.py ran");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout)
            .expect("UTF-8")
            .trim()
            .to_string()
    };
    // 100 replies of 1..=100 µs, one request lost, and ping's other lines.
    let mut output = String::from("PING 10.203.2.1 (10.203.2.1) 56(84) bytes of data.\n");
    for us in 1..=100 {
        output.push_str(&format!(
            "64 bytes from 10.203.2.1: icmp_seq={us} ttl=64 time=0.{us:03} ms\n"
        ));
    }
    output.push_str("--- 10.203.2.1 ping statistics ---\n101 packets transmitted, 100 received\n");
    assert_eq!(ping_stats("101", &output), "101,100,50.5,99.0,50.5,100.0");
    assert_eq!(ping_stats("5", "no answer\n"), "5,0,,,,");
}

/// A many-flows configuration's fill run (run 0: flow setup) is shown
/// beside its runs in testbed.md and left out of every median: the
/// fixtures' acl1 10k fill run (0.901 Mpps) would lift that median from
/// 0.483 to 0.692 if it counted (0.717 is the bare forwarder's).
#[test]
fn a_fill_run_is_reported_beside_the_runs_and_not_in_the_median() {
    let scratch = Scratch::with_fixtures();
    let md = scratch.render_ok();
    let switch = section(&md, SECTIONS[3]);
    assert!(switch.contains("a fill run comes first"), "{switch}");
    assert!(!switch.contains("0.901"), "{switch}");
    let target = row(
        switch,
        "microseg, acl1 10k, conntrack ≥ 90% of bare AF_XDP, many",
    );
    assert!(target.contains("0.483 vs 0.717"), "{target}");

    let summary = scratch.summarize();
    let acl = row(&summary, "microseg, ClassBench acl1 10k, conntrack");
    assert!(acl.contains("| 0.483 |"), "{acl}");
    assert!(acl.ends_with("0.649 / fill 0.901; 0.483 |"), "{acl}");
}

/// The paired phase (run.sh measures the bare forwarder and microseg acl1
/// 10k in alternation, column `pair`): the 90% target is the median of the
/// pairs' ratios, not the ratio of the medians. The fixture's few-flows
/// rows become three pairs whose medians are 87.9% apart but whose paired
/// ratios are 92.5%, 93.3% and 87.9%: met only when paired. The many-flows
/// rows stay unpaired, as in results written before the column.
#[test]
fn paired_runs_decide_the_bare_forwarder_target_by_the_median_of_their_ratios() {
    let scratch = Scratch::with_fixtures();
    let csv = scratch.file("testbed.csv");
    let text = std::fs::read_to_string(&csv).expect("the fixture testbed.csv");
    let pairs = [(1, 0.80, 0.74), (2, 0.60, 0.56), (3, 0.66, 0.58)];
    let mut paired = String::new();
    for (index, line) in text.lines().enumerate() {
        if index == 0 {
            paired += &format!("{line},pair\n");
        } else if line.contains(",bare-afxdp-few,") {
            for (pair, bare, _) in pairs {
                paired += &format!(
                    "2026-11-20T08:10:00Z,bare-afxdp-few,bare,-,16,{pair},{bare},3.2,10,1.30,,{pair}\n"
                );
            }
        } else if line.contains(",microseg-acl1_10k-few,microseg,") {
            for (pair, _, micro) in pairs {
                paired += &format!(
                    "2026-11-20T08:10:00Z,microseg-acl1_10k-few,microseg,acl1_10k,16,{pair},{micro},3.2,10,1.30,,{pair}\n"
                );
            }
        } else {
            paired += &format!("{line},\n");
        }
    }
    std::fs::write(&csv, paired).expect("rewrite testbed.csv");

    let md = scratch.render_ok();
    let switch = section(&md, SECTIONS[3]);
    let few = row(
        switch,
        "microseg, acl1 10k, conntrack ≥ 90% of bare AF_XDP, few",
    );
    assert!(
        few.contains("median of 3 paired ratios 92% (pairs: 88%–93%); medians 0.580 vs 0.660"),
        "{few}"
    );
    assert_eq!(last_cell(few), "met", "{few}");
    let many = row(
        switch,
        "microseg, acl1 10k, conntrack ≥ 90% of bare AF_XDP, many",
    );
    assert!(many.contains("0.483 vs 0.717 Mpps (67%)"), "{many}");
    assert_eq!(last_cell(many), "**not met**", "{many}");
    assert!(switch.contains("Measured in alternation"), "{switch}");

    let summary = scratch.summarize();
    let line = line_starting(&summary, "- few flows:");
    assert_eq!(line, "- few flows: 0.925, 0.933, 0.879; median 0.925");
    assert!(!summary.contains("- many flows:"), "{summary}");
}

/// A rate the sink took nearly all of (≥ 90% of what the generator
/// offered) is the generator's limit, marked "≥" and explained; the
/// fixtures' rates, far below their 3.2 Mpps offered, are not marked.
#[test]
fn a_rate_the_generator_limited_is_marked_as_a_lower_bound() {
    let scratch = Scratch::with_fixtures();
    let plain = scratch.render_ok();
    let switch = section(&plain, SECTIONS[3]);
    assert!(!switch.contains("≥ 1.848"), "{switch}");
    assert!(!switch.contains("generator's limit"), "{switch}");

    let csv = scratch.file("testbed.csv");
    let text = std::fs::read_to_string(&csv).expect("the fixture testbed.csv");
    let limited = text.replace(
        "microseg-fastpath-acl1_10k-few,microseg-fastpath,acl1_10k,16,1,1.8477,3.2,",
        "microseg-fastpath-acl1_10k-few,microseg-fastpath,acl1_10k,16,1,1.8477,1.9,",
    );
    assert_ne!(
        limited, text,
        "the fixture has the fast path's few-flows run"
    );
    std::fs::write(&csv, limited).expect("rewrite testbed.csv");
    let md = scratch.render_ok();
    let switch = section(&md, SECTIONS[3]);
    let fast = row(switch, "microseg with the XDP fast path");
    assert!(fast.contains("| ≥ 1.848 |"), "{fast}");
    assert!(
        !fast.contains("≥ 0.839"),
        "many flows stay unmarked: {fast}"
    );
    assert!(
        switch.contains("the figure is the generator's limit"),
        "{switch}"
    );
}

/// Environment settings of a script run: (variable, value).
type Settings<'a> = &'a [(&'a str, &'a str)];

/// Runs a benchmark script (a path under benches/) with `args` and
/// `settings` in its environment, its results folder pointed at
/// `out_dir` (`out_variable`), and checks that it refuses with status 2,
/// exactly `message` on stderr, and nothing written.
fn assert_refused(
    script: &str,
    args: &[&str],
    settings: Settings<'_>,
    (out_variable, out_dir): (&str, &Path),
    message: &str,
) {
    let out = Command::new("bash")
        .current_dir(repo())
        .arg(script)
        .args(args)
        .envs(settings.iter().copied())
        .env(out_variable, out_dir)
        .output()
        .unwrap_or_else(|e| panic!("run bash {script}: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let case = format!("{script} {args:?} {settings:?}");
    assert_eq!(out.status.code(), Some(2), "{case}: {stderr}");
    assert_eq!(stderr.trim(), message, "{case}");
    assert!(!out_dir.exists(), "{case}: nothing written");
}

/// `benches/testbed/run.sh` refuses a bad setting by naming it, before it
/// builds, sets up or writes anything (it needs no root to get that far).
#[test]
fn the_testbed_benchmark_refuses_a_bad_setting_by_name() {
    let scratch = Scratch::with_fixtures();
    let out_dir = scratch.0.join("not-written");
    let frames = "FRAMES_PER_PORT must be a power of two from 64 to 1048576";
    for (variable, value, message) in [
        ("FILL", "2", "FILL must be 0 or 1, not '2'".to_string()),
        (
            "PAIRS",
            "five",
            "PAIRS must be a whole number, not 'five'".to_string(),
        ),
        (
            "SETTLE_RUNS",
            "-1",
            "SETTLE_RUNS must be a whole number, not '-1'".to_string(),
        ),
        ("FRAMES_PER_PORT", "100", format!("{frames}, not '100'")),
        ("FRAMES_PER_PORT", "4096x", format!("{frames}, not '4096x'")),
        (
            "FRAMES_PER_PORT",
            "2097152",
            format!("{frames}, not '2097152'"),
        ),
    ] {
        assert_refused(
            "benches/testbed/run.sh",
            &[],
            &[(variable, value), ("NO_BUILD", "1")],
            ("BENCH_OUT", &out_dir),
            &message,
        );
    }
}

/// One side of one alternation of an A/B run: a testbed.csv with acl1
/// 10k's few-flows runs, and its many-flows fill run (run 0) and runs.
fn ab_side(out: &Path, side: &str, few: &[f64], fill: Option<f64>, many: &[f64]) {
    let dir = out.join(side);
    std::fs::create_dir_all(&dir).expect("create a side's folder");
    let mut csv = String::from(
        "date,config,kind,rules,flows,run,mpps,offered_mpps,seconds,load1,idle_cpu_pct\n",
    );
    let many_runs = fill
        .iter()
        .map(|mpps| (0, *mpps))
        .chain((1..).zip(many.iter().copied()));
    let rows = (1..)
        .zip(few.iter().copied())
        .map(|(run, mpps)| ("few", 16, run, mpps))
        .chain(many_runs.map(|(run, mpps)| ("many", 1_048_576, run, mpps)));
    for (name, flows, run, mpps) in rows {
        csv.push_str(&format!(
            "2026-11-25T08:00:00Z,microseg-acl1_10k-{name},microseg,acl1_10k,{flows},{run},{mpps},2.0,8,1.5,\n"
        ));
    }
    std::fs::write(dir.join("testbed.csv"), csv).expect("write a side's testbed.csv");
}

/// ab.py pairs each alternation's medians (fill runs left out), and
/// reports the pooled medians, the median of the paired ratios and the
/// pairs B won; an alternation with one side only is refused by number.
#[test]
fn an_ab_run_is_compared_pair_by_pair() {
    let scratch = Scratch::with_fixtures();
    let out = scratch.0.join("ab");
    // Side A's first many-flows median would be 0.415 with its fill run.
    ab_side(
        &out,
        "1-a",
        &[0.50, 0.54, 0.52],
        Some(0.90),
        &[0.40, 0.41, 0.42],
    );
    ab_side(&out, "1-b", &[0.55, 0.56, 0.57], None, &[0.44, 0.45, 0.46]);
    ab_side(&out, "2-a", &[0.60, 0.61, 0.62], None, &[0.50]);
    ab_side(&out, "2-b", &[0.58, 0.59, 0.60], None, &[0.55]);
    let result = python("benches/testbed/ab.py", &[out.as_os_str()]);
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    assert!(
        stdout.contains("| microseg-acl1_10k-few | 0.520, 0.610 | 0.560, 0.590 | 0.565 | 0.575 | 1.022 | 1 of 2 |"),
        "{stdout}"
    );
    assert!(
        stdout.contains("| microseg-acl1_10k-many | 0.410, 0.500 | 0.450, 0.550 | 0.455 | 0.500 | 1.099 | 2 of 2 |"),
        "the fill run (0.90) is not in side A's first median: {stdout}"
    );
    let written = std::fs::read_to_string(out.join("ab.md")).expect("ab.md is written");
    assert_eq!(written, stdout);

    std::fs::remove_file(out.join("ab.md")).expect("remove ab.md");
    ab_side(&out, "3-a", &[0.60], None, &[]);
    let refused = python("benches/testbed/ab.py", &[out.as_os_str()]);
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("alternation(s) 3 have one side only"),
        "{stderr}"
    );
    assert!(!out.join("ab.md").exists(), "nothing written");
}

/// `benches/testbed/ab.sh` refuses bad arguments by name before it
/// measures, links or empties anything.
#[test]
fn the_ab_script_refuses_bad_arguments_by_name() {
    let scratch = Scratch::with_fixtures();
    let out_dir = scratch.0.join("ab-not-written");
    let missing = ["/nonexistent-a", "/nonexistent-b"];
    let cases: [(&[&str], Settings<'_>, &str); 3] = [
        (
            &[],
            &[],
            "ab.sh: usage: ab.sh A_BIN_DIR B_BIN_DIR (see the comment at the top)",
        ),
        (
            &missing,
            &[("REPS", "0")],
            "ab.sh: REPS must be a whole number of at least 1, not '0'",
        ),
        (
            &missing,
            &[],
            "ab.sh: side A: /nonexistent-a/microseg is missing or not executable",
        ),
    ];
    for (args, settings, message) in cases {
        assert_refused(
            "benches/testbed/ab.sh",
            args,
            settings,
            ("AB_OUT", &out_dir),
            message,
        );
    }
}
