#!/usr/bin/env python3
"""The benchmark report: docs/benchmarks.md and its figures, regenerated
from the raw result files of one `make bench` run (sections 4 and 5, the
switch's, from a later `make bench-testbed` run where there was one).

    report.py machine   --out FILE [--quick 0|1]
    report.py finish    --file FILE [--at ISO]
    report.py criterion --from target/criterion --out FILE
    report.py render    [--data DIR] [--out FILE] [--figures DIR] [--finished-at ISO]

`machine` describes the machine and the checkout at the start of a run
(machine.json; testbed-machine.json for the switch benchmarks' run), and
`finish` adds when the run ended. `criterion` flattens criterion's per-benchmark estimates
into criterion.csv. `render` reads every input of the data folder
(default docs/bench/), draws the figures with gnuplot
(benches/figures/NAME.gp, data beside each SVG as fig-NAME.csv) and writes
the markdown (default docs/benchmarks.md).

`render` reads and checks every input before it writes anything, and
writes every output to a temporary file that is renamed into place only
once all of them succeeded: a failed run leaves the previous report as it
was. A missing required input, or a malformed one (a missing column, a
field that is not a number), is an error naming the file (and the line and
column); a missing optional input makes its section say "not measured in
this run".

The page holds numbers and the method only; the analysis of them, dated,
lives in docs/performance-notes.md, written by hand.

Python 3 standard library only; the figures need gnuplot 5.
"""
import argparse
import csv
import datetime
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIGURE_SCRIPTS = Path(__file__).resolve().parent / "figures"

# Which step of a run writes each input: named in the error when one is
# missing. `make bench` runs benches/run-all.sh, which runs every step into a
# staging folder and copies the results into docs/bench/.
PRODUCERS = {
    "machine.json": "`make bench`, in benches/run-all.sh: "
    "`python3 benches/report.py machine --out FILE`",
    "criterion.csv": "`make bench`, in benches/run-all.sh: the criterion benches, then "
    "`python3 benches/report.py criterion --from CRITERION_HOME --out FILE`",
    "classifier.csv": "`make bench`, in benches/run-all.sh: "
    "`target/release/classifier-report --csv FILE`",
    "conntrack.csv": "`make bench`, in benches/run-all.sh: "
    "`target/release/conntrack-report --csv FILE`",
    "table-compare.csv": "`make bench`, in benches/run-all.sh: "
    "`target/release/table-compare --csv FILE`",
    "policy.csv": "`make bench`, in benches/run-all.sh, which runs benches/policy/swap.sh "
    "(alone: `make bench-policy`)",
    "policy-nft.csv": "`make bench`, in benches/run-all.sh, which runs benches/policy/swap.sh "
    "(alone: `make bench-policy`)",
    "testbed.csv": "`make bench`, in benches/run-all.sh, which runs benches/testbed/run.sh "
    "(alone: `make bench-testbed`)",
    "testbed-machine.json": "`make bench` or `make bench-testbed`, in benches/run-all.sh",
    "latency.csv": "`make bench`, in benches/run-all.sh, which runs benches/testbed/run.sh "
    "(alone: `make bench-testbed`)",
}

# Column kinds of each CSV input: "str", "int", "float"; a trailing "?"
# allows an empty field (None).
SCHEMAS = {
    "classifier.csv": {
        "set": "str",
        "rules": "int",
        "trees": "int",
        "depth": "int",
        "replication": "float",
        "memory_bytes": "int",
        "build_ms": "float",
        "single_ns": "float",
        "batch_ns": "float",
        "linear_ns": "float",
    },
    "conntrack.csv": {
        "entries": "int",
        "threads": "int",
        "new_per_s": "float",
        "hit_hot_ns": "float",
        "hit_cold_ns": "float",
        "single_hot_ns": "float",
        "single_cold_ns": "float",
        "sweep_ns_per_entry": "float",
        "bytes_per_entry": "float",
    },
    "policy.csv": {
        "benchmark": "str",
        "size": "str",
        "classifier_rules": "int",
        "median_ms": "float",
        "memory_bytes": "int?",
    },
    "policy-nft.csv": {"set": "str", "rules": "int", "median_ms": "float"},
    "testbed.csv": {
        "date": "str",
        "config": "str",
        "kind": "str",
        "rules": "str",
        "flows": "str",
        "run": "int?",
        "mpps": "float?",
        "offered_mpps": "float?",
        "seconds": "float?",
        "load1": "float?",
        "idle_cpu_pct": "float?",
        # The paired phase's pair (benches/testbed/run.sh); absent in
        # results written before it.
        "pair": "int?",
    },
    "latency.csv": {
        "date": "str",
        "config": "str",
        "load_pps": "int",
        "sent": "int",
        "received": "int",
        "median_us": "float?",
        "p99_us": "float?",
        "mean_us": "float?",
        "max_us": "float?",
    },
    "table-compare.csv": {
        "structure": "str",
        "threads": "int",
        "inserts_per_s": "float",
        "update_ns": "float",
    },
    "criterion.csv": {"group": "str", "bench": "str", "median_ns": "float", "elements": "int?"},
}
# Columns an input may lack (then None in every row): added to a schema
# after results were already published without them.
ABSENT_OK = {"pair"}

REQUIRED = ["classifier.csv", "conntrack.csv", "policy.csv", "policy-nft.csv", "testbed.csv"]
OPTIONAL = ["latency.csv", "table-compare.csv", "criterion.csv", "testbed-machine.json"]

MIB = 1024 * 1024
NOT_MEASURED = "Not measured in this run"


class ReportError(Exception):
    """An input or tool problem, reported as one line and exit code 1."""


# --- small helpers ----------------------------------------------------------


def display(path):
    """A path as the page and the errors show it: relative to the repository
    when inside it."""
    path = Path(path).resolve()
    try:
        return path.relative_to(REPO).as_posix()
    except ValueError:
        return str(path)


def write_atomic(path, text):
    """Writes text to path through a temporary file in the same folder."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def run_tool(args, cwd=None):
    """First line of a tool's output, or "?" when it is missing or fails."""
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=30, cwd=cwd)
    except (OSError, subprocess.SubprocessError):
        return "?"
    if done.returncode != 0:
        return "?"
    lines = done.stdout.strip().splitlines()
    return lines[0].strip() if lines else "?"


def num(x, digits):
    return "–" if x is None else f"{x:,.{digits}f}"


def ns(x):
    """Nanoseconds: one decimal below 100 ns, none above."""
    if x is None:
        return "–"
    return f"{x:.1f} ns" if x < 100 else f"{x:,.0f} ns"


def scaled(x, unit):
    """Three significant figures or so: 9.41, 39.6, 160."""
    if x < 10:
        return f"{x:.2f} {unit}"
    if x < 100:
        return f"{x:.1f} {unit}"
    return f"{x:,.0f} {unit}"


def duration_ns(x):
    """A duration given in ns, in the unit that suits it."""
    if x is None:
        return "–"
    if x < 1e3:
        return ns(x)
    if x < 1e6:
        return scaled(x / 1e3, "µs")
    if x < 1e9:
        return scaled(x / 1e6, "ms")
    return scaled(x / 1e9, "s")


def us(x):
    if x is None:
        return "–"
    return f"{x:.1f}" if x < 1000 else f"{x:,.0f}"


def ms(x):
    if x is None:
        return "–"
    return f"{x:.1f}" if x < 100 else f"{x:,.0f}"


def mpps(x):
    return num(x, 3)


def per_s(x):
    """A rate in millions per second, two decimals."""
    return "–" if x is None else f"{x / 1e6:.2f} M"


def pct(x, digits=0):
    return "–" if x is None else f"{100 * x:.{digits}f}%"


def mib(x):
    return "–" if x is None else f"{x / MIB:.2f} MiB"


def count(n):
    """A count with thousands separators; 1,048,576 flows and such."""
    return f"{n:,}"


def kilo(n):
    """10000 -> 10k, 1000000 -> 1M: rule and entry counts on axes."""
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}k"
    return str(n)


def verdict(ok):
    if ok is None:
        return "not measured"
    return "met" if ok else "**not met**"


def table(header, rows, align):
    """A markdown table; align holds one 'l' or 'r' per column."""
    out = ["| " + " | ".join(header) + " |"]
    out.append("|" + "|".join("---:" if a == "r" else "---" for a in align) + "|")
    out.extend("| " + " | ".join(str(c) for c in row) + " |" for row in rows)
    return out


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def span(values, fmt, unit=""):
    """'a–b unit' over values (or 'a unit' when they read the same)."""
    lo, hi = fmt(min(values)), fmt(max(values))
    text = lo if lo == hi else f"{lo}–{hi}"
    if not unit:
        return text
    return f"{text}{unit}" if unit == "%" else f"{text} {unit}"


def rule_count(name):
    """Rules named by a testbed or policy set: 0rules -> 0, acl1_10k -> 10000."""
    if name.endswith("rules") and name[: -len("rules")].isdigit():
        return int(name[: -len("rules")])
    m = re.search(r"_(\d+)([kK])$", name)
    if m:
        return int(m.group(1)) * 1000
    return None


def pretty_set(name):
    """acl1_10k -> acl1 10k."""
    return name.replace("_", " ")


def dates(values):
    """The first and last of some ISO dates: '2026-11-24T05:59:28Z' or 'A to B'."""
    values = sorted(set(values))
    return values[0] if len(values) == 1 else f"{values[0]} to {values[-1]}"


def parse_iso(text):
    try:
        when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ReportError(f"--finished-at: '{text}' is not an ISO 8601 date and time")
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when.astimezone(datetime.timezone.utc)


def utc_text(when):
    return when.strftime("%Y-%m-%d %H:%M UTC")


# --- inputs -----------------------------------------------------------------


def convert(raw, kind, where, column):
    if kind.endswith("?"):
        if raw == "":
            return None
        kind = kind[:-1]
    if kind == "str":
        return raw
    if raw == "":
        raise ReportError(f"{where}, column {column}: empty, expected a number")
    try:
        value = int(raw) if kind == "int" else float(raw)
    except ValueError:
        what = "an integer" if kind == "int" else "a number"
        raise ReportError(f"{where}, column {column}: '{raw}' is not {what}")
    if kind == "float" and not math.isfinite(value):
        raise ReportError(f"{where}, column {column}: '{raw}' is not a finite number")
    return value


def read_csv(path, schema, allow_empty=False):
    """Rows of a CSV input as dicts typed by schema; '_line' is the line.
    A file with a header and no rows is an error unless `allow_empty`."""
    name = display(path)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise ReportError(f"{name}: line 1: empty file, expected the header {','.join(schema)}")
        header = [h.strip() for h in header]
        missing = [c for c in schema if c not in header and c not in ABSENT_OK]
        if missing:
            raise ReportError(
                f"{name}: line 1: missing column {', '.join(missing)} "
                f"(expected {','.join(schema)})"
            )
        index = {c: header.index(c) for c in schema if c in header}
        rows = []
        for fields in reader:
            if not any(f.strip() for f in fields):
                continue
            line = reader.line_num
            if len(fields) != len(header):
                raise ReportError(
                    f"{name}: line {line}: {len(fields)} fields, the header has {len(header)}"
                )
            row = {"_line": line}
            for column, kind in schema.items():
                row[column] = (
                    convert(fields[index[column]].strip(), kind, f"{name}: line {line}", column)
                    if column in index
                    else None
                )
            rows.append(row)
    if not rows and not allow_empty:
        raise ReportError(f"{name}: no data rows")
    return rows


def check_testbed(rows, name):
    for row in rows:
        where = f"{name}: line {row['_line']}"
        if row["kind"] == "idle-cpu":
            if row["idle_cpu_pct"] is None:
                raise ReportError(f"{where}, column idle_cpu_pct: empty in an idle-cpu row")
        else:
            if row["mpps"] is None:
                raise ReportError(f"{where}, column mpps: empty, expected a number")
            if "-" not in row["config"]:
                raise ReportError(
                    f"{where}, column config: '{row['config']}' does not end in -few or -many"
                )


def read_machine(path):
    name = display(path)
    try:
        machine = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ReportError(f"{name}: line {e.lineno}: not JSON: {e.msg}")
    if not isinstance(machine, dict):
        raise ReportError(f"{name}: line 1: expected a JSON object")
    return machine


def load_inputs(data_dir):
    """Every input of the data folder, checked; all problems in one error."""
    data, problems = {}, []
    for file in ["machine.json"] + REQUIRED + OPTIONAL:
        path = data_dir / file
        if not path.is_file():
            if file in REQUIRED or file == "machine.json":
                problems.append(
                    f"{display(path)} is missing: it is written by {PRODUCERS[file]}"
                )
            else:
                data[file] = None
            continue
        try:
            if file.endswith(".json"):
                data[file] = read_machine(path)
            else:
                data[file] = read_csv(path, SCHEMAS[file])
                if file == "testbed.csv":
                    check_testbed(data[file], display(path))
        except ReportError as e:
            problems.append(str(e))
        except (OSError, UnicodeDecodeError) as e:
            problems.append(f"{display(path)}: cannot read: {e}")
    if problems:
        raise ReportError("\n".join(problems))
    return data


# --- figures ----------------------------------------------------------------


class Figure:
    """One figure: its data (written as fig-NAME.csv), the script that
    draws it (benches/figures/NAME.gp) and the inputs it comes from."""

    def __init__(self, name, title, sources, header, rows):
        self.name, self.title, self.sources = name, title, sources
        self.header, self.rows = header, rows

    def csv_text(self):
        lines = [",".join(self.header)]
        for row in self.rows:
            lines.append(
                ",".join(
                    "NaN" if v is None else (f"{v:.6g}" if isinstance(v, float) else str(v))
                    for v in row
                )
            )
        return "\n".join(lines) + "\n"


def gnuplot_string(path):
    return "'" + str(path).replace("'", "''") + "'"


def draw(figures, figures_dir):
    """Draws every figure into temporary files; returns (tmp, final) pairs
    to rename once everything else succeeded."""
    gnuplot = shutil.which("gnuplot")
    if gnuplot is None:
        raise ReportError("gnuplot is not installed (Debian: apt-get install gnuplot-nox)")
    moves = []
    try:
        for fig in figures:
            script = FIGURE_SCRIPTS / f"{fig.name}.gp"
            if not script.is_file():
                raise ReportError(f"{display(script)} is missing")
            csv_final = figures_dir / f"fig-{fig.name}.csv"
            svg_final = figures_dir / f"{fig.name}.svg"
            csv_tmp = figures_dir / f".fig-{fig.name}.csv.tmp-{os.getpid()}"
            svg_tmp = figures_dir / f".{fig.name}.svg.tmp-{os.getpid()}"
            moves += [(csv_tmp, csv_final), (svg_tmp, svg_final)]
            csv_tmp.write_text(fig.csv_text(), encoding="utf-8")
            variables = f"data={gnuplot_string(csv_tmp)}; out={gnuplot_string(svg_tmp)}"
            done = subprocess.run(
                [gnuplot, "-e", variables, str(script)], capture_output=True, text=True
            )
            if done.returncode != 0:
                raise ReportError(
                    f"gnuplot failed on {display(script)}:\n{done.stderr.strip()}"
                )
            if not svg_tmp.is_file() or "<svg" not in svg_tmp.read_text(encoding="utf-8"):
                raise ReportError(f"gnuplot wrote no SVG for {display(script)}")
    except BaseException:
        for tmp, _ in moves:
            tmp.unlink(missing_ok=True)
        raise
    return moves


def figure_lines(fig, out_dir, figures_dir, data_dir):
    svg = os.path.relpath(figures_dir / f"{fig.name}.svg", out_dir)
    sources = ", ".join(f"`{display(data_dir / s)}`" for s in fig.sources)
    return [
        f"![{fig.title}]({Path(svg).as_posix()})",
        "",
        f"Data: `{display(figures_dir / f'fig-{fig.name}.csv')}` (from {sources}); drawn by "
        f"`{display(FIGURE_SCRIPTS / f'{fig.name}.gp')}` via `benches/report.py render`.",
        "",
    ]


# --- sections ---------------------------------------------------------------


class Page:
    """The markdown being built, and the figures it embeds."""

    def __init__(self, data_dir, out_dir, figures_dir):
        self.lines, self.figures = [], []
        self.data_dir, self.out_dir, self.figures_dir = data_dir, out_dir, figures_dir

    def add(self, *lines):
        self.lines.extend(lines)

    def add_table(self, header, rows, align):
        self.lines.extend(table(header, rows, align))
        self.lines.append("")

    def add_figure(self, fig):
        self.figures.append(fig)
        self.lines.extend(figure_lines(fig, self.out_dir, self.figures_dir, self.data_dir))

    def src(self, file):
        return f"`{display(self.data_dir / file)}`"

    def not_measured(self, file, what=""):
        self.add(
            f"{NOT_MEASURED}{what}: there is no {self.src(file)}. It is written by "
            f"{PRODUCERS[file]}.",
            "",
        )


def targets_table(page, rows):
    """rows: (target, measured, ok)."""
    page.add_table(
        ["target", "measured", "met?"],
        [(t, m, verdict(ok)) for t, m, ok in rows],
        "llr",
    )


def criterion_rows(data, group):
    rows = data["criterion.csv"] or []
    return [r for r in rows if r["group"] == group]


PIPELINE_CASES = {
    ("packet_parse", "realistic_mix"): "parser: `parse_frame` over a realistic mix of frames",
    ("pipeline", "established_tcp"): "pipeline, established TCP: parse, conntrack hit with "
    "window check, switch",
    ("pipeline", "established_udp_16_flows"): "pipeline, established UDP, 16 flows each four "
    "times a batch: parse, one conntrack hit per flow counting its followers, switch",
    ("pipeline", "established_udp_64_flows"): "pipeline, established UDP, 64 flows a batch: parse, "
    "conntrack hit, switch",
    ("pipeline", "new_tcp_flows"): "pipeline, new TCP flows: parse, conntrack miss, classify, "
    "insert into a fresh 64K table, switch",
}


def section_pipeline(page, data):
    page.add(
        "## 1. Packet parser and pipeline",
        "",
        "Criterion (`cargo bench -p microseg-benches --bench parser` and `--bench pipeline`), "
        "median of its samples. The parser bench runs `parse_frame` over a realistic mix of "
        "16 frames (TCP/UDP over IPv4 and IPv6, one and two VLAN tags, ICMP/ICMPv6 echo, "
        "ARP, an IPv6 extension chain, an IPv4 first fragment; see `frames::realistic_mix`). "
        "The pipeline bench (`dataplane::pipeline`, no I/O) runs batches of 64 frames, as an "
        "AF_XDP rx batch; the policy is fw1_10k turned into allow rules under default deny; "
        "the flows come from a trace generated from it (TCP only), with 64-byte payloads. "
        "Per frame is the batch's median divided by the frames in it.",
        "",
    )
    rows = criterion_rows(data, "packet_parse") + criterion_rows(data, "pipeline")
    if data["criterion.csv"] is None:
        page.not_measured("criterion.csv")
        return
    if not rows:
        page.add(
            f"{NOT_MEASURED}: {page.src('criterion.csv')} has no packet_parse or pipeline "
            "group.",
            "",
        )
        return
    body = []
    established = None
    for r in rows:
        case = PIPELINE_CASES.get((r["group"], r["bench"]), f"{r['group']}/{r['bench']}")
        n = r["elements"]
        frame = r["median_ns"] / n if n else None
        if (r["group"], r["bench"]) == ("pipeline", "established_tcp"):
            established = frame
        body.append(
            (
                case,
                duration_ns(r["median_ns"]),
                "–" if n is None else count(n),
                ns(frame),
                "–" if not frame else per_s(1e9 / frame),
            )
        )
    page.add_table(
        ["case", "per batch (median)", "frames per batch", "per frame", "frames/s"],
        body,
        "lrrrr",
    )
    bare = [
        r["mpps"]
        for r in data["testbed.csv"]
        if r["kind"] == "bare" and r["config"].endswith("-few") and r["mpps"]
    ]
    if established and bare:
        bare_ns = 1e3 / median(bare)
        page.add(
            f"For scale: the bare AF_XDP copy-mode forwarder of section 4's run forwarded "
            f"{mpps(median(bare))} Mpps (few flows), {duration_ns(bare_ns)} per frame, almost all of it "
            f"kernel time; the pipeline's work for an established flow is "
            f"{pct(established / bare_ns)} of that"
            + (
                " (section 4 was measured on another machine, named in the header: the "
                "share is indicative only)."
                if other_host(data["machine.json"], data.get("testbed-machine.json"))
                else "."
            ),
            "",
        )


def section_classifier(page, data):
    rows = data["classifier.csv"]
    page.add(
        "## 2. Classifier (`dataplane::classifier`)",
        "",
        f"`cargo run --release -p microseg-benches --bin classifier-report -- --csv "
        f"docs/bench/classifier.csv`, raw numbers in {page.src('classifier.csv')}. For every "
        "ClassBench set the compiled classifier and the linear reference are measured in the "
        "same run: **single** is `classify` per key over a 100,000-key trace generated from "
        "the rules (a random point inside a random rule, corners included, fixed seed); "
        "**batched** is `classify_batch` over the same trace; the two are timed in turn, pass "
        "after pass, for at least 7 passes and 6 s (1 s in a QUICK run), and each is the "
        "median of its passes, so that a burst of load from other tenants slows a few passes "
        "of both rather than all of one; **linear** is the "
        "reference on a prefix of the same trace; **build** is the median of 5 builds; "
        "**memory** is tree nodes plus leaf rule copies, excluding the rule list; **depth** "
        "is the deepest tree, in steps; **copies/rule** is leaf copies divided by rules "
        "(replication); **speed-up** is linear ÷ single. `-v6` rows are IPv6 sets derived "
        "from the IPv4 set (`derive_ipv6_rules`).",
        "",
    )
    body = [
        (
            r["set"],
            count(r["rules"]),
            r["trees"],
            r["depth"],
            f"{r['replication']:.2f}",
            mib(r["memory_bytes"]),
            f"{r['build_ms']:,.0f} ms",
            ns(r["single_ns"]),
            ns(r["batch_ns"]),
            ns(r["linear_ns"]),
            f"{r['linear_ns'] / r['single_ns']:,.0f}×" if r["single_ns"] else "–",
        )
        for r in rows
    ]
    page.add_table(
        [
            "set",
            "rules",
            "trees",
            "depth",
            "copies/rule",
            "memory",
            "build",
            "single",
            "batched",
            "linear",
            "speed-up",
        ],
        body,
        "lrrrrrrrrrr",
    )

    by_set = {r["set"]: r for r in rows}
    targets = []
    for name, limit, note in [
        ("acl1_10k", 100, ""),
        ("fw1_10k", 57, " (2× ahead of the best published algorithm)"),
        ("ipc1_10k", 100, ""),
    ]:
        r = by_set.get(name)
        targets.append(
            (
                f"{name}: single lookup ≤ {limit} ns{note}",
                ns(r["single_ns"]) + f" (batched {ns(r['batch_ns'])})" if r else "–",
                None if r is None else r["single_ns"] <= limit,
            )
        )

    def every(label, sets, key, limit, fmt, unit):
        if not sets:
            targets.append((label, "–", None))
            return
        worst = max(sets, key=lambda r: r[key])
        measured = f"{span([r[key] for r in sets], fmt, unit)} (worst: {worst['set']})"
        targets.append((label, measured, worst[key] <= limit))

    def in_mib(x):
        return f"{x / MIB:.2f}"

    tens = [r for r in rows if "_10k" in r["set"]]
    hundreds = [r for r in rows if "_100k" in r["set"]]
    every("every 10k set: build ≤ 200 ms", tens, "build_ms", 200, lambda x: f"{x:.0f}", "ms")
    every("every 10k set: memory ≤ 8 MiB", tens, "memory_bytes", 8 * MIB, in_mib, "MiB")
    every(
        "every 100k set: single lookup ≤ 500 ns",
        hundreds,
        "single_ns",
        500,
        lambda x: ns(x)[:-3],
        "ns",
    )
    every(
        "every 100k set: build ≤ 5 s", hundreds, "build_ms", 5000, lambda x: f"{x / 1e3:.2f}", "s"
    )
    every("every 100k set: memory ≤ 64 MiB", hundreds, "memory_bytes", 64 * MIB, in_mib, "MiB")
    page.add("Targets (issue 3), from this run:", "")
    targets_table(page, targets)
    page.add(
        "The published algorithms these targets are set against, and what limits the "
        "closest case, are in `docs/performance-notes.md`.",
        "",
    )

    page.add_figure(
        Figure(
            "classifier-lookup",
            "Classifier lookup time per set",
            ["classifier.csv"],
            ["set", "single_ns", "batched_ns", "linear_ns"],
            [(r["set"], r["single_ns"], r["batch_ns"], r["linear_ns"]) for r in rows],
        )
    )

    page.add(
        "### Under criterion",
        "",
        "`cargo bench -p microseg-benches --bench classifier`: the same 10k cases, median "
        "time per trace divided by the keys in it (build: median time per build).",
        "",
    )
    if data["criterion.csv"] is None:
        page.not_measured("criterion.csv")
        return
    cells = {}
    for r in criterion_rows(data, "classify"):
        variant, _, name = r["bench"].partition("/")
        if r["elements"]:
            cells.setdefault(name, {})[variant] = r["median_ns"] / r["elements"]
    for r in criterion_rows(data, "build"):
        cells.setdefault(r["bench"].split("/")[-1], {})["build"] = r["median_ns"]
    if not cells:
        page.add(
            f"{NOT_MEASURED}: {page.src('criterion.csv')} has no classify or build group.", ""
        )
        return
    page.add_table(
        ["set", "single", "batched", "linear", "build"],
        [
            (
                name,
                duration_ns(c.get("single")),
                duration_ns(c.get("batched")),
                duration_ns(c.get("linear")),
                duration_ns(c.get("build")),
            )
            for name, c in sorted(cells.items())
        ],
        "lrrrr",
    )


CONNTRACK_CASES = {
    "hit_hot": "hit, 1,024-connection working set",
    "hit_cold": "hit, 10,000 distinct connections spread over the 1M",
    "hit_cold_batched_udp": "the same 10,000 UDP hits through `track_batch` (64 a batch, "
    "prefetched), on 4 KiB pages",
    "hit_cold_batched_tcp": "the same with established TCP connections (window check, "
    "the slot's second part read), on 4 KiB pages",
    "insert_100k_new": "100,000 new connections into an empty 100K table",
}


def section_conntrack(page, data):
    rows = data["conntrack.csv"]
    page.add(
        "## 3. Connection tracking (`dataplane::conntrack`)",
        "",
        "`cargo run --release -p microseg-benches --bin conntrack-report -- --csv "
        f"docs/bench/conntrack.csv`, raw numbers in {page.src('conntrack.csv')}. The traffic "
        "is UDP connections from many sources, each opened by a client packet and answered. "
        "Packets go through `track_batch` 64 at a time, as the pipeline tracks an AF_XDP rx "
        "batch: every packet's tags, then its slot, are prefetched before the batch is "
        "tracked. **new conn/s**: miss plus insert, filling an empty table of that capacity "
        "(a fresh table per sample); with two threads the threads split the keys. **hit**: a "
        "packet of an existing connection, per lookup, in samples of 200,000 lookups. The "
        "fills, the four hit measurements and the sweep are timed in turn, round after round, "
        "for at least 5 rounds and 6 s (1 s in a QUICK run), and each is the median of its "
        "samples; *hot*: "
        "keys drawn from a "
        "working set of 1,024 connections; *cold*: keys drawn uniformly from all entries; "
        "*single*: the same with `track`, one packet at a time (no prefetch). "
        "**sweep**: one full pass where nothing has expired (the scan cost). "
        "**bytes/entry**: everything the filled table allocated (allocation counter), "
        "divided by entries: the slot arrays (112-byte slots plus a tag byte, with headroom "
        "for uneven shards and a 97% load cap), the quota table and the event queue.",
        "",
    )
    page.add_table(
        [
            "entries",
            "threads",
            "new conn/s",
            "hit, hot",
            "hit, cold",
            "single hit, hot",
            "single hit, cold",
            "sweep (per entry)",
            "bytes/entry",
        ],
        [
            (
                count(r["entries"]),
                r["threads"],
                per_s(r["new_per_s"]),
                ns(r["hit_hot_ns"]),
                ns(r["hit_cold_ns"]),
                ns(r["single_hot_ns"]),
                ns(r["single_cold_ns"]),
                ns(r["sweep_ns_per_entry"]),
                f"{r['bytes_per_entry']:.0f}",
            )
            for r in rows
        ],
        "rrrrrrrrr",
    )

    at = {(r["entries"], r["threads"]): r for r in rows}
    big = max(r["entries"] for r in rows)
    targets = []
    for key, single, label in [
        ("hit_hot_ns", "single_hot_ns", "hot"),
        ("hit_cold_ns", "single_cold_ns", "cold"),
    ]:
        for threads in (1, 2):
            r = at.get((big, threads))
            targets.append(
                (
                    f"hit ≤ 50 ns median at {kilo(big)} entries: {label}, {threads} "
                    f"thread{'s' if threads > 1 else ''}",
                    f"{ns(r[key])} (one at a time: {ns(r[single])})" if r else "–",
                    None if r is None else r[key] <= 50,
                )
            )
    one = at.get((big, 1))
    others = ", ".join(
        f"{kilo(r['entries'])}: {per_s(r['new_per_s'])}/s"
        for r in rows
        if r["threads"] == 1 and r["entries"] != big
    )
    targets.append(
        (
            f"≥ 5 M new connections/s per core at {kilo(big)} entries (1 thread)",
            (f"{per_s(one['new_per_s'])}/s" + (f" (at {others})" if others else ""))
            if one
            else "–",
            None if one is None else one["new_per_s"] >= 5e6,
        )
    )
    big_rows = [r for r in rows if r["entries"] == big]
    worst = max(r["bytes_per_entry"] for r in big_rows)
    targets.append(
        (
            f"≤ 128 bytes allocated per entry at {kilo(big)} entries",
            f"{worst:.0f} B",
            worst <= 128,
        )
    )
    page.add("Targets (issue 4), from this run:", "")
    targets_table(page, targets)

    series = sorted({r["entries"] for r in rows})
    page.add_figure(
        Figure(
            "conntrack-hit",
            "Conntrack hit latency vs table size",
            ["conntrack.csv"],
            ["entries", "hot_1_thread", "hot_2_threads", "cold_1_thread", "cold_2_threads"],
            [
                (
                    e,
                    at.get((e, 1), {}).get("hit_hot_ns"),
                    at.get((e, 2), {}).get("hit_hot_ns"),
                    at.get((e, 1), {}).get("hit_cold_ns"),
                    at.get((e, 2), {}).get("hit_cold_ns"),
                )
                for e in series
            ],
        )
    )

    page.add(
        "### Under criterion",
        "",
        "`cargo bench -p microseg-benches --bench conntrack`: one thread, a 1M-entry table; "
        "median per batch and per lookup or insert.",
        "",
    )
    order = list(CONNTRACK_CASES)
    crit = sorted(
        criterion_rows(data, "conntrack_1M"),
        key=lambda r: (order.index(r["bench"]) if r["bench"] in order else len(order), r["bench"]),
    )
    if data["criterion.csv"] is None:
        page.not_measured("criterion.csv")
    elif not crit:
        page.add(f"{NOT_MEASURED}: {page.src('criterion.csv')} has no conntrack_1M group.", "")
    else:
        page.add_table(
            ["case", "median", "per operation", "operations/s"],
            [
                (
                    CONNTRACK_CASES.get(r["bench"], r["bench"]),
                    duration_ns(r["median_ns"]),
                    ns(r["median_ns"] / r["elements"]) if r["elements"] else "–",
                    f"{per_s(r['elements'] * 1e9 / r['median_ns'])}/s" if r["elements"] else "–",
                )
                for r in crit
            ],
            "lrrr",
        )

    page.add(
        "### The table's structure vs dashmap",
        "",
        "`cargo run --release -p microseg-benches --bin table-compare` measures dashmap (the "
        "issue's starting choice) against the sharded hashbrown design the table uses, on "
        "raw operations: insert 1M entries, then update random existing ones (what a hit "
        "does), with the same key, value, hasher and shard count. Why the table does not use "
        "dashmap itself: `docs/performance-notes.md`.",
        "",
    )
    compare = data["table-compare.csv"]
    if compare is None:
        page.not_measured("table-compare.csv")
        return
    groups = {}
    for r in compare:
        groups.setdefault((r["structure"], r["threads"]), []).append(r)
    body = []
    for (structure, threads), rs in groups.items():
        runs = f"{len(rs)} runs: " if len(rs) > 1 else ""
        body.append(
            (
                structure,
                threads,
                span([r["inserts_per_s"] for r in rs], lambda x: f"{x / 1e6:.2f}", "M/s"),
                span([r["update_ns"] for r in rs], lambda x: ns(x)[:-3], "ns"),
                f"{runs}median insert {per_s(median([r['inserts_per_s'] for r in rs]))}/s"
                if runs
                else "",
            )
        )
    if all(not b[4] for b in body):
        page.add_table(
            ["structure", "threads", "inserts/s", "update existing"],
            [b[:4] for b in body],
            "lrrr",
        )
    else:
        page.add_table(
            ["structure", "threads", "inserts/s", "update existing", "runs"],
            body,
            "lrrrl",
        )


KIND_ORDER = [
    "bare",
    "kernel-norules",
    "microseg",
    "microseg-fastpath",
    "kernel-nft-linear",
    "kernel-nft-vmap",
]


def testbed_label(kind, rules):
    if kind == "bare":
        return "bare AF_XDP forwarder (ceiling, no classification)"
    if kind == "kernel-norules":
        return "Linux forwarding, no rules (no conntrack)"
    if kind == "microseg":
        if rule_count(rules) == 0:
            return "microseg, 0 rules (default allow), conntrack"
        return f"microseg, ClassBench {pretty_set(rules)}, conntrack"
    if kind == "microseg-fastpath":
        return f"microseg with the XDP fast path, ClassBench {pretty_set(rules)}, conntrack"
    if kind == "kernel-nft-linear":
        return f"Linux + nftables linear chain, {pretty_set(rules)}, conntrack"
    if kind == "kernel-nft-vmap":
        return f"Linux + nftables verdict maps, {pretty_set(rules)}, conntrack"
    return f"{kind}, {rules}"


# A testbed rate this close to what the generator offered is the generator's
# limit, not the device under test's (section 4 marks it "≥").
GENERATOR_BOUND = 0.9


class Testbed:
    """testbed.csv reduced: median Mpps per configuration and flow count.
    Fill runs (run 0: the many-flows runs' flow setup, benches/testbed/run.sh)
    are kept apart, out of the medians."""

    def __init__(self, rows):
        self.runs, self.fills, self.idle, self.meta, self.flows = {}, {}, [], {}, {}
        self.offered = {}
        # (base, flows) -> {pair number: Mpps}: the runs of the paired phase.
        self.pairs = {}
        self.dates, self.loads, self.seconds = set(), [], set()
        for r in rows:
            self.dates.add(r["date"])
            if r["kind"] == "idle-cpu":
                self.idle.append(r)
                continue
            base, flows = r["config"].rsplit("-", 1)
            measured = self.fills if r["run"] == 0 else self.runs
            measured.setdefault((base, flows), []).append(r["mpps"])
            if r["pair"] is not None and r["run"] != 0:
                self.pairs.setdefault((base, flows), {})[r["pair"]] = r["mpps"]
            if r["run"] != 0 and r["offered_mpps"] is not None:
                self.offered.setdefault((base, flows), []).append(r["offered_mpps"])
            self.meta[base] = (r["kind"], r["rules"])
            self.flows.setdefault(flows, r["flows"])
            if r["load1"] is not None:
                self.loads.append(r["load1"])
            if r["seconds"] is not None:
                self.seconds.add(r["seconds"])

    def med(self, base, flows):
        return median(self.runs.get((base, flows), []))

    def paired_ratios(self, base, ref, flows):
        """base / ref for each pair both were measured in (the paired
        phase: the two runs of a pair are seconds apart), in pair order;
        empty when they were not paired."""
        a, b = self.pairs.get((base, flows), {}), self.pairs.get((ref, flows), {})
        return [a[p] / b[p] for p in sorted(set(a) & set(b)) if b[p]]

    def generator_bound(self, base, flows):
        """True when the sink received at least GENERATOR_BOUND of what the
        generator offered (medians): the device under test was not
        overloaded, so the rate is the generator's, a lower bound of the
        forwarding rate."""
        m, offered = self.med(base, flows), median(self.offered.get((base, flows), []))
        return m is not None and bool(offered) and m >= GENERATOR_BOUND * offered

    def configs(self):
        def order(base):
            kind, rules = self.meta[base]
            k = KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER)
            n = rule_count(rules)
            return (k, -1 if n is None else n, base)

        return sorted(self.meta, key=order)

    def flow_kinds(self):
        return [f for f in ("few", "many") if f in self.flows] + sorted(
            f for f in self.flows if f not in ("few", "many")
        )

    def base_of(self, kind):
        return next((b for b in self.configs() if self.meta[b][0] == kind), None)


def flows_text(tb, flows):
    n = tb.flows[flows]
    return f"{flows} flows ({count(int(n)) if n.isdigit() else n})"


def section_testbed(page, data):
    tb = Testbed(data["testbed.csv"])
    flows = tb.flow_kinds()
    runs = max(len(v) for v in tb.runs.values()) if tb.runs else 0
    seconds = ", ".join(f"{s:g}" for s in sorted(tb.seconds)) or "?"
    loads = f"{min(tb.loads):.2f}–{max(tb.loads):.2f}" if tb.loads else "?"
    page.add(
        "## 4. Switch throughput through veth testbeds",
        "",
        f"`benches/testbed/run.sh` (alone: `make bench-testbed`; method, topology and pinning "
        f"in the comment block at its top), run of {dates(tb.dates)}; raw runs in "
        f"{page.src('testbed.csv')}, per-run rates and how to read them in "
        f"[{display(page.data_dir / 'testbed.md')}]"
        f"({Path(os.path.relpath(page.data_dir / 'testbed.md', page.out_dir)).as_posix()}). "
        "A generator namespace sends 60-byte UDP frames (64 with the FCS) from CPU 0 with "
        "XDP (live frames through `BPF_PROG_RUN`, or, where the kernel refuses those, frames "
        "circling in an XDP loop; testbed.md names which), several Mpps: the device under "
        "test, on CPU 1, "
        "is always overloaded, so each rate is the forwarding rate under overload. The sink "
        "drops in XDP and counts. *Few flows* is a handful of 5-tuples, *many flows* over a "
        "million distinct 5-tuples sent round robin, so that with many flows nearly every "
        "frame is a conntrack lookup in a table of a million entries. Each figure is the "
        f"median of up to {runs} run(s) of {seconds} s; the machine is shared (1-minute load "
        f"during the runs: {loads})."
        + (
            " With many flows a fill run comes first and sets up the flows (flow setup, "
            "not forwarding: its rate is beside the runs in testbed.md, not in the median)."
            if tb.fills
            else ""
        ),
        "",
    )
    kernel = tb.base_of("kernel-norules")
    bare = tb.base_of("bare")
    header = ["configuration"]
    align = "l"
    for f in flows:
        header += [f"{flows_text(tb, f)}, Mpps", f"{f}: vs bare AF_XDP", f"{f}: vs kernel fwd"]
        align += "rrr"

    def ratio(x, ref):
        return None if x is None or not ref else x / ref

    def shown(base, f):
        """The median as the page shows it: "≥" before a generator-bound one."""
        return ("≥ " if tb.generator_bound(base, f) else "") + mpps(tb.med(base, f))

    body = []
    for base in tb.configs():
        cells = [testbed_label(*tb.meta[base])]
        for f in flows:
            m = tb.med(base, f)
            cells += [
                shown(base, f),
                num(ratio(m, bare and tb.med(bare, f)), 2),
                num(ratio(m, kernel and tb.med(kernel, f)), 2),
            ]
        body.append(cells)
    page.add_table(header, body, align)
    if any(tb.generator_bound(b, f) for b in tb.configs() for f in flows):
        page.add(
            f"≥: the sink received at least {GENERATOR_BOUND:.0%} of what the generator "
            "offered, so the device under test was not overloaded: the figure is the "
            "generator's limit in this run, a lower bound of the forwarding rate (and so "
            "are its ratios).",
            "",
        )

    micro = {
        rule_count(tb.meta[b][1]): b for b in tb.configs() if tb.meta[b][0] == "microseg"
    }
    targets = []
    zero = micro.get(0)
    for f in flows:
        m, k = zero and tb.med(zero, f), kernel and tb.med(kernel, f)
        targets.append(
            (
                f"microseg (0 rules) ≥ kernel forwarding without rules, {f} flows",
                f"{mpps(m)} vs {mpps(k)} Mpps ({pct(ratio(m, k))})" if m and k else "–",
                None if not (m and k) else m >= k,
            )
        )
    fast = tb.base_of("microseg-fastpath")
    for f in flows:
        m, k = fast and tb.med(fast, f), kernel and tb.med(kernel, f)
        targets.append(
            (
                f"microseg with the XDP fast path ({pretty_set(tb.meta[fast][1]) if fast else '–'}) "
                f"≥ kernel forwarding without rules, {f} flows",
                f"{shown(fast, f)} vs {mpps(k)} Mpps ({pct(ratio(m, k))})" if m and k else "–",
                # A lower bound below the target decides nothing.
                None
                if not (m and k) or (m < k and tb.generator_bound(fast, f))
                else m >= k,
            )
        )
    acl = "microseg-acl1_10k" if "microseg-acl1_10k" in tb.meta else None
    for f in flows:
        m, b = acl and tb.med(acl, f), bare and tb.med(bare, f)
        paired = tb.paired_ratios(acl, bare, f) if acl and bare else []
        if paired:
            # Measured in alternation: the median of the pairs' ratios.
            r = median(paired)
            value = (
                f"median of {len(paired)} paired ratios {pct(r)} (pairs: "
                f"{span(paired, pct)}); medians {mpps(m)} vs {mpps(b)} Mpps"
            )
        else:
            r = ratio(m, b)
            value = f"{mpps(m)} vs {mpps(b)} Mpps ({pct(r)})" if m and b else "–"
        targets.append(
            (
                f"microseg, acl1 10k, conntrack ≥ 90% of bare AF_XDP, {f} flows",
                value,
                None if r is None else r >= 0.9,
            )
        )
    counts = sorted(n for n in micro if n is not None and n <= 10_000)
    for f in flows:
        values = [(n, tb.med(micro[n], f)) for n in counts]
        values = [(n, v) for n, v in values if v is not None]
        if 0 not in dict(values) or len(values) < 2:
            targets.append((f"flat from 0 to 10k rules (within 10%), {f} flows", "–", None))
            continue
        z = dict(values)[0]
        worst = max(abs(v - z) / z for _, v in values)
        targets.append(
            (
                f"flat from 0 to 10k rules (within 10% of 0 rules), {f} flows",
                " / ".join(mpps(v) for _, v in values)
                + f" Mpps at {' / '.join(kilo(n) for n, _ in values)} rules; largest "
                f"deviation {pct(worst, 1)}",
                worst <= 0.10,
            )
        )
    idle = [r["idle_cpu_pct"] for r in tb.idle]
    targets.append(
        (
            "idle CPU < 2% of a core",
            f"{span(idle, lambda x: f'{x:.2f}', '%')} of a core over {len(idle)} measurements"
            if idle
            else "–",
            None if not idle else max(idle) < 2,
        )
    )
    if tb.pairs:
        paired = sorted({b for b, _ in tb.pairs}, key=tb.configs().index)
        page.add(
            f"Measured in alternation (the paired phase of run.sh): "
            f"{' and '.join(testbed_label(*tb.meta[b]) for b in paired)}, each on its own "
            "testbed, both up, one run each in turn, so that the two runs of a pair are "
            "seconds apart and the shared machine's drift over minutes falls on both. "
            "The 90% target is the median of the pairs' ratios; the table's medians come "
            "from the same runs.",
            "",
        )
    page.add("Targets (issue 5), from this run:", "")
    targets_table(page, targets)

    # microseg against nftables with the same rules.
    nft = {}
    for b in tb.configs():
        kind, rules = tb.meta[b]
        if kind.startswith("kernel-nft-"):
            nft.setdefault(rules, {})[kind] = b
    versus = []
    for rules, kinds in nft.items():
        m_base = f"microseg-{rules}" if f"microseg-{rules}" in tb.meta else None
        for f in flows:
            m = m_base and tb.med(m_base, f)
            lin = kinds.get("kernel-nft-linear") and tb.med(kinds["kernel-nft-linear"], f)
            vm = kinds.get("kernel-nft-vmap") and tb.med(kinds["kernel-nft-vmap"], f)
            versus.append(
                (
                    pretty_set(rules),
                    f,
                    mpps(m),
                    mpps(lin),
                    f"{num(ratio(m, lin), 2)}×",
                    mpps(vm),
                    f"{num(ratio(m, vm), 2)}×",
                )
            )
    if versus:
        page.add("microseg against nftables with the same rules (Mpps):", "")
        page.add_table(
            [
                "rules",
                "flows",
                "microseg",
                "nftables linear chain",
                "microseg ÷ linear",
                "nftables verdict maps",
                "microseg ÷ maps",
            ],
            versus,
            "llrrrrr",
        )

    if tb.idle:
        when = {
            "before-traffic": "just started, no traffic yet",
            "after-traffic": "right after the runs (conntrack entries still held)",
        }
        page.add(
            "Idle CPU of `microseg run` in adaptive mode with no traffic (target: under 2% of "
            "a core):",
            "",
        )
        page.add_table(
            ["configuration", "when", "% of one core", "seconds", "met?"],
            [
                (
                    r["config"],
                    when.get(r["flows"], r["flows"]),
                    f"{r['idle_cpu_pct']:.2f}",
                    "–" if r["seconds"] is None else f"{r['seconds']:g}",
                    verdict(r["idle_cpu_pct"] < 2),
                )
                for r in tb.idle
            ],
            "llrrr",
        )

    # Figure: Mpps against the number of rules, categorical x.
    series = [("microseg", "microseg"), ("nft_linear", "kernel-nft-linear"), ("nft_vmap", "kernel-nft-vmap")]
    by_count = {}
    for b in tb.configs():
        kind, rules = tb.meta[b]
        n = rule_count(rules)
        if n is not None and any(kind == k for _, k in series):
            by_count.setdefault(n, {}).setdefault(kind, b)
    fig_rows = []
    for x, n in enumerate(sorted(by_count)):
        row = [kilo(n), x]
        for _, kind in series:
            b = by_count[n].get(kind)
            row += [b and tb.med(b, "few"), b and tb.med(b, "many")]
        row += [kernel and tb.med(kernel, "few"), kernel and tb.med(kernel, "many")]
        row += [bare and tb.med(bare, "few"), bare and tb.med(bare, "many")]
        fig_rows.append(row)
    if fig_rows:
        header = ["rules", "x"]
        for name, _ in series:
            header += [f"{name}_few", f"{name}_many"]
        header += ["kernel_norules_few", "kernel_norules_many", "bare_afxdp_few", "bare_afxdp_many"]
        page.add_figure(
            Figure(
                "throughput-rules",
                "Switch throughput vs number of rules",
                ["testbed.csv"],
                header,
                fig_rows,
            )
        )


LATENCY_LABELS = {
    "bare-afxdp": "bare AF_XDP forwarder",
    "kernel-norules": "Linux forwarding, no rules",
    "microseg-0rules": "microseg, 0 rules, conntrack (adaptive poll)",
    "microseg-0rules-busy": "microseg, 0 rules, conntrack (busy poll)",
}


def load_text(pps):
    return "idle" if pps == 0 else f"{pps / 1000:,.0f} kpps load"


def section_latency(page, data):
    page.add(
        "## 5. Added latency",
        "",
        "`benches/testbed/run.sh` (alone: `make bench-testbed`), after the throughput runs, "
        "with a fresh topology per configuration: `ping` round trips from the generator's namespace to "
        "the sink, through the device under test and back, first idle, then under a steady "
        "background load of UDP datagrams at the rate shown (60-byte frames, from the "
        "generator's namespace to the sink, which drops them in XDP). Ping and load run on "
        "CPU 0, the device under test on CPU 1. Per-reply round trips are reduced to the "
        "median, the 99th percentile (nearest rank), the mean and the maximum; *lost* is "
        "pings sent less replies received. The added latency of microseg is the difference "
        "of the medians.",
        "",
    )
    rows = data["latency.csv"]
    if rows is None:
        page.not_measured("latency.csv")
        return
    order = list(LATENCY_LABELS)
    rows = sorted(
        rows,
        key=lambda r: (
            r["load_pps"],
            order.index(r["config"]) if r["config"] in order else len(order),
            r["config"],
        ),
    )
    page.add(f"Run of {dates(r['date'] for r in rows)}, in µs:", "")
    page.add_table(
        ["configuration", "load", "sent", "lost", "median", "p99", "mean", "max"],
        [
            (
                LATENCY_LABELS.get(r["config"], r["config"]),
                load_text(r["load_pps"]),
                count(r["sent"]),
                f"{count(r['sent'] - r['received'])}"
                + (f" ({pct((r['sent'] - r['received']) / r['sent'], 1)})" if r["sent"] else ""),
                us(r["median_us"]),
                us(r["p99_us"]),
                us(r["mean_us"]),
                us(r["max_us"]),
            )
            for r in rows
        ],
        "llrrrrrr",
    )

    def med_of(config, load):
        return median([r["median_us"] for r in rows if r["config"] == config and r["load_pps"] == load])

    added = []
    for load in sorted({r["load_pps"] for r in rows}):
        m = med_of("microseg-0rules", load)
        k = med_of("kernel-norules", load)
        b = med_of("bare-afxdp", load)

        def diff(x, ref):
            return "–" if x is None or ref is None else f"{x - ref:+.1f}"

        added.append((load_text(load), us(m), us(k), diff(m, k), us(b), diff(m, b)))
    page.add("Added latency of microseg, difference of medians (µs):", "")
    page.add_table(
        [
            "load",
            "microseg median",
            "kernel forwarding median",
            "microseg − kernel",
            "bare AF_XDP median",
            "microseg − bare AF_XDP",
        ],
        added,
        "lrrrrr",
    )
    page.add_figure(
        Figure(
            "latency",
            "Ping round trip through the device under test",
            ["latency.csv"],
            ["case", "median_us", "p99_us"],
            [
                (
                    f"{r['config']} {load_text(r['load_pps']).replace(' load', '')}",
                    r["median_us"],
                    r["p99_us"],
                )
                for r in rows
            ],
        )
    )


def compile_size(size):
    m = re.fullmatch(r"(\d+)x(\d+)", size)
    if m:
        return f"{int(m.group(1)):,} workloads × {int(m.group(2)):,} label rules"
    return size


def section_policy(page, data):
    rows = data["policy.csv"]
    page.add(
        "## 6. Policy compile and swap",
        "",
        f"`benches/policy/swap.sh` (alone: `make bench-policy`); raw results in "
        f"{page.src('policy.csv')} and {page.src('policy-nft.csv')}. **Compile**: a policy of "
        "N workloads × M label rules turned into classifier rules and trees, one thread. "
        "**Swap**: the time from an accepted change to the new policy in force, measured as "
        "`PolicyEngine::apply`: check, compile once, write the version with fsync, publish. "
        "Two cases: the *first push* of a document to an engine holding the empty policy, "
        "and an *edit*: the document in force pushed again with one rule taken out (a "
        "different rule each run), the everyday change. Both replace the whole document, as "
        "the API's `PUT /v1/policy` does. They are set next to `nft -f` of the same filters "
        "as a linear chain, loaded into a fresh namespace (also a whole replacement). The "
        "filters are the TCP and UDP filters of ClassBench acl1, as CIDR rules. Each microseg "
        "time is the median of samples spread over at least 6 s (1 s in a QUICK run) and 5 "
        "samples, first pushes and edits taken in turn; `nft -f` is the median of 5 loads.",
        "",
    )
    compiles = [r for r in rows if r["benchmark"] == "compile"]
    targets = []
    if compiles:
        page.add_table(
            ["policy", "classifier rules", "compile (median)", "memory of the trees"],
            [
                (
                    compile_size(r["size"]),
                    count(r["classifier_rules"]),
                    f"{ms(r['median_ms'])} ms",
                    mib(r["memory_bytes"]),
                )
                for r in compiles
            ],
            "lrrr",
        )
        for r in compiles:
            targets.append(
                (
                    f"compile {compile_size(r['size'])} ≤ 1 s",
                    f"{ms(r['median_ms'])} ms",
                    r["median_ms"] <= 1000,
                )
            )
    else:
        page.add(f"{NOT_MEASURED}: {page.src('policy.csv')} has no compile row.", "")

    sets = {}
    for r in rows:
        if r["benchmark"] in ("swap-first", "swap-edit"):
            s = sets.setdefault(r["size"], {"rules": r["classifier_rules"]})
            s[r["benchmark"]] = r["median_ms"]
    for r in data["policy-nft.csv"]:
        s = sets.setdefault(r["set"], {"rules": r["rules"]})
        s["nft"] = r["median_ms"]
    ordered = sorted(sets.items(), key=lambda kv: kv[1]["rules"])

    def faster(ref, x):
        return "–" if ref is None or not x else f"{ref / x:.1f}× faster"

    page.add_table(
        ["set", "rules", "first push (ms)", "an edit (ms)", "`nft -f` (ms)", "edit vs `nft -f`",
         "first push vs `nft -f`"],
        [
            (
                s,
                count(v["rules"]),
                ms(v.get("swap-first")),
                ms(v.get("swap-edit")),
                ms(v.get("nft")),
                faster(v.get("nft"), v.get("swap-edit")),
                faster(v.get("nft"), v.get("swap-first")),
            )
            for s, v in ordered
        ],
        "lrrrrrr",
    )
    tens = [(s, v) for s, v in ordered if "_10k" in s]
    for s, v in tens or [("a 10k set", {})]:
        for key, what in [("swap-first", "first push"), ("swap-edit", "edit")]:
            x = v.get(key)
            targets.append(
                (
                    f"swap ≤ 50 ms for the 10k-rule policy ({s}): {what}",
                    "–" if x is None else f"{ms(x)} ms",
                    None if x is None else x <= 50,
                )
            )
    page.add("Targets, from this run:", "")
    targets_table(page, targets)
    page.add_figure(
        Figure(
            "policy-swap",
            "Policy swap latency vs policy size",
            ["policy.csv", "policy-nft.csv"],
            ["set", "rules", "first_push_ms", "edit_ms", "nft_f_ms"],
            [
                (s, v["rules"], v.get("swap-first"), v.get("swap-edit"), v.get("nft"))
                for s, v in ordered
            ],
        )
    )


def run_facts(machine, finished):
    """(commit with its state, started, finished, quick) of a run's
    machine.json; `finished` where the file does not say (runs before
    `report.py finish` existed ended when their page was rendered)."""
    def when(value):
        try:
            return utc_text(parse_iso(str(value)))
        except ReportError:
            return "?" if value in (None, "") else str(value)

    dirty = machine.get("dirty")
    state = {True: " (with uncommitted changes)", False: ""}.get(dirty, " (state unknown)")
    commit = machine.get("commit") or "?"
    ended = when(machine["finished"]) if machine.get("finished") else utc_text(finished)
    quick = machine.get("quick") in (True, 1, "1", "true")
    return f"`{commit}`{state}", when(machine.get("date")), ended, quick


def other_host(machine, testbed_machine):
    """True when the switch's run (`testbed-machine.json`) was on other
    hardware than the main run: its rates are not comparable with the
    other sections'."""
    return testbed_machine is not None and any(
        testbed_machine.get(key) not in (None, "", machine.get(key))
        for key in ("cores", "cpu_model", "memory_gib")
    )


def header(page, machine, testbed_machine, finished):
    def get(key):
        value = machine.get(key)
        return "?" if value in (None, "") else value

    commit, started, ended, quick = run_facts(machine, finished)
    # The switch benchmarks measured apart, later (`make bench-testbed`):
    # their run is named beside the main one.
    switch_run = None
    if testbed_machine is not None and any(
        testbed_machine.get(key) != machine.get(key) for key in ("commit", "date")
    ):
        switch_run = run_facts(testbed_machine, finished)
    notes = os.path.relpath(REPO / "docs" / "performance-notes.md", page.out_dir)
    page.add(
        "# microseg benchmarks",
        "",
        f"Generated by `make bench` (benches/report.py) on {utc_text(finished)}; do not edit "
        f"by hand; analysis and history: [docs/performance-notes.md]({Path(notes).as_posix()}).",
        "",
        f"- **Machine**: {get('cores')} × {get('cpu_model')}, {get('memory_gib')} GiB RAM, "
        f"{get('distro')}, kernel {get('kernel')}; {get('rustc')}; {get('nft')}. Load average "
        f"(1/5/15 min) at the start: {get('load_start')}. The machine is shared: differences under "
        "about 10–25% between runs are noise.",
        f"- **Commit**: {commit}.",
        f"- **Run**: "
        + (
            "**QUICK** (`make bench QUICK=1`: short measurements to check the pipeline; the "
            "numbers are indicative only)"
            if quick
            else "full (`make bench`)"
        )
        + f", started {started}, finished {ended}.",
    )
    if switch_run is not None:
        s_commit, s_started, s_ended, s_quick = switch_run
        s_kernel = testbed_machine.get("kernel")
        if other_host(machine, testbed_machine):
            # Another host: its ratios hold there, its rates are not
            # comparable with the other sections'.
            on_kernel = (
                f", on another machine ({testbed_machine.get('cores') or '?'} × "
                f"{testbed_machine.get('cpu_model') or '?'}, "
                f"{testbed_machine.get('memory_gib') or '?'} GiB RAM, kernel {s_kernel or '?'})"
            )
        elif s_kernel and s_kernel != machine.get("kernel"):
            on_kernel = f", on kernel {s_kernel}"
        else:
            on_kernel = ""
        page.add(
            "- **Sections 4 and 5** (switch throughput, idle CPU, latency) come from a later "
            "run of the switch benchmarks alone (`make bench-testbed`"
            + (", **QUICK**" if s_quick else "")
            + f"): commit {s_commit}{on_kernel}, started {s_started}, finished {s_ended}; "
            "load average "
            f"at its start: {testbed_machine.get('load_start') or '?'} "
            "(`testbed-machine.json`). Their ratios are within that run.",
        )
    page.add(
        f"- **Raw results**: `{display(page.data_dir)}/` (one file per benchmark, "
        f"`machine.json` for the lines above).",
        "- **Regenerate**: `make bench` (every benchmark, then this page; root, about 30 "
        "minutes on the 2-core VM) or `make bench QUICK=1` (the same steps, short: a few "
        "minutes once built); `make bench-testbed` measures the switch alone (sections 4 "
        "and 5, about 25 minutes) and redraws the page with it. "
        "`python3 benches/report.py render` redraws this page and its figures from the raw "
        "results without measuring anything.",
        "",
        "Targets are those of the project's issues (3: classifier, 4: conntrack, 5: switch "
        "throughput); each targets table is computed from the numbers of its section's run.",
        "",
    )


def render(args):
    data_dir = Path(args.data).resolve()
    out = Path(args.out).resolve()
    figures_dir = Path(args.figures).resolve() if args.figures else data_dir
    finished = (
        parse_iso(args.finished_at)
        if args.finished_at
        else datetime.datetime.now(datetime.timezone.utc)
    )
    for folder, what in [(data_dir, "--data"), (out.parent, "--out's folder"), (figures_dir, "--figures")]:
        if not folder.is_dir():
            raise ReportError(f"{what}: {folder} is not a folder")
    data = load_inputs(data_dir)

    page = Page(data_dir, out.parent, figures_dir)
    header(page, data["machine.json"], data["testbed-machine.json"], finished)
    section_pipeline(page, data)
    section_classifier(page, data)
    section_conntrack(page, data)
    section_testbed(page, data)
    section_latency(page, data)
    section_policy(page, data)
    text = "\n".join(page.lines).rstrip("\n") + "\n"

    moves = draw(page.figures, figures_dir)
    try:
        for tmp, final in moves:
            os.replace(tmp, final)
    finally:
        for tmp, _ in moves:
            tmp.unlink(missing_ok=True)
    write_atomic(out, text)
    print(f"wrote {display(out)} and {len(page.figures)} figure(s) in {display(figures_dir)}/")


# --- machine and criterion --------------------------------------------------


def first_field(path, prefix, separator):
    """The rest of the first line of `path` starting with `prefix`, after
    `separator`, stripped; "?" when the file or the line is missing."""
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.startswith(prefix):
                    return line.split(separator, 1)[1].strip().strip('"')
    except (OSError, IndexError):
        pass
    return "?"


def machine_facts():
    """What the machine and the checkout are, now (also used by
    benches/testbed/summarize.py)."""
    memory = first_field("/proc/meminfo", "MemTotal:", ":")
    try:
        memory = round(int(memory.split()[0]) / 1024 / 1024, 1)
    except (ValueError, IndexError):
        memory = "?"
    load = "?"
    try:
        with open("/proc/loadavg", encoding="utf-8") as f:
            load = " ".join(f.read().split()[:3])
    except OSError:
        pass
    commit = run_tool(["git", "rev-parse", "--short", "HEAD"], cwd=REPO)
    status = "?"
    if commit != "?":
        try:
            done = subprocess.run(
                ["git", "status", "--porcelain"], capture_output=True, text=True, cwd=REPO,
                timeout=60,
            )
            status = bool(done.stdout.strip()) if done.returncode == 0 else "?"
        except (OSError, subprocess.SubprocessError):
            pass
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "cpu_model": first_field("/proc/cpuinfo", "model name", ":"),
        "cores": os.cpu_count() or "?",
        "memory_gib": memory,
        "distro": first_field("/etc/os-release", "PRETTY_NAME=", "="),
        "kernel": platform.release() or "?",
        "rustc": run_tool(["rustc", "--version"]),
        "nft": run_tool(["nft", "--version"]),
        "commit": commit,
        "dirty": status,
        "load_start": load,
    }


def machine(args):
    info = machine_facts()
    info["quick"] = args.quick == "1"
    write_atomic(args.out, json.dumps(info, indent=2) + "\n")


def finish(args):
    """Records in a run's machine.json when the run ended."""
    info = read_machine(args.file)
    at = parse_iso(args.at) if args.at else datetime.datetime.now(datetime.timezone.utc)
    info["finished"] = at.strftime("%Y-%m-%dT%H:%M:%SZ")
    write_atomic(args.file, json.dumps(info, indent=2) + "\n")


def criterion(args):
    root = Path(getattr(args, "from"))
    if not root.is_dir():
        raise ReportError(
            f"{root} is not a folder: run `cargo bench -p microseg-benches` first"
        )
    rows = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "report")
        here = Path(dirpath)
        if here.name != "new" or "benchmark.json" not in filenames:
            continue
        try:
            bench = json.loads((here / "benchmark.json").read_text(encoding="utf-8"))
            estimates = json.loads((here / "estimates.json").read_text(encoding="utf-8"))
            median_ns = float(estimates["median"]["point_estimate"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ReportError(f"{here}: unreadable criterion result: {e}")
        name = "/".join(
            str(part) for part in (bench.get("function_id"), bench.get("value_str")) if part
        )
        throughput = bench.get("throughput") or {}
        elements = throughput.get("Elements", "")
        rows.append((bench.get("group_id", here.parent.parent.name), name, median_ns, elements))
    if not rows:
        raise ReportError(
            f"no criterion results under {root}: run `cargo bench -p microseg-benches` first"
        )
    rows.sort(key=lambda r: (r[0], r[1]))
    lines = ["group,bench,median_ns,elements"]
    lines += [f"{g},{b},{m:.1f},{e}" for g, b, m, e in rows]
    write_atomic(args.out, "\n".join(lines) + "\n")
    print(f"wrote {len(rows)} criterion result(s) to {args.out}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    m = sub.add_parser("machine", help="describe the machine and the checkout (JSON)")
    m.add_argument("--out", required=True)
    m.add_argument("--quick", choices=["0", "1"], default="0")
    f = sub.add_parser("finish", help="record in a machine.json when its run ended")
    f.add_argument("--file", required=True)
    f.add_argument("--at", default=None, help="ISO 8601 (default: now)")
    c = sub.add_parser("criterion", help="criterion's medians as CSV")
    c.add_argument("--from", required=True, help="criterion's folder (target/criterion)")
    c.add_argument("--out", required=True)
    r = sub.add_parser("render", help="write docs/benchmarks.md and its figures")
    r.add_argument("--data", default=str(REPO / "docs" / "bench"))
    r.add_argument("--out", default=str(REPO / "docs" / "benchmarks.md"))
    r.add_argument("--figures", default=None, help="where the SVGs go (default: --data)")
    r.add_argument("--finished-at", default=None, help="end of the run, ISO 8601 (default: now)")
    args = ap.parse_args()
    try:
        commands = {"machine": machine, "finish": finish, "criterion": criterion, "render": render}
        commands[args.command](args)
    except ReportError as e:
        for line in str(e).splitlines():
            print(f"report.py: error: {line}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
