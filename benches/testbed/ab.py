#!/usr/bin/env python3
"""Compares the two sides of an A/B run of the throughput testbed
(benches/testbed/ab.sh): for each configuration, each alternation's median
on side A and on side B, the pooled medians, the median of the paired
ratios B/A, and in how many alternations B was ahead. On a shared machine
whose speed drifts by more than the difference looked for, the pairs (A
and B measured minutes apart) say more than the pooled medians.

    ab.py AB_OUT        reads AB_OUT/<alternation>-a/testbed.csv and
                        AB_OUT/<alternation>-b/testbed.csv, prints the
                        table and writes it to AB_OUT/ab.md
"""
import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from report import SCHEMAS, ReportError, Testbed, median, read_csv  # noqa: E402  (benches/report.py)

SIDE_DIR = re.compile(r"^(\d+)-([ab])$")


def sides(out):
    """{alternation: {"a": Testbed, "b": Testbed}} for every complete pair."""
    found = {}
    for entry in sorted(out.iterdir()):
        m = SIDE_DIR.match(entry.name)
        if not m or not entry.is_dir():
            continue
        csv = entry / "testbed.csv"
        if not csv.exists():
            raise ReportError(f"{csv}: missing (did that pass of run.sh fail?)")
        found.setdefault(int(m.group(1)), {})[m.group(2)] = Testbed(
            read_csv(csv, SCHEMAS["testbed.csv"])
        )
    pairs = {n: s for n, s in found.items() if len(s) == 2}
    lone = sorted(set(found) - set(pairs))
    if lone:
        raise ReportError(
            f"{out}: alternation(s) {', '.join(map(str, lone))} have one side only"
        )
    if not pairs:
        raise ReportError(f"{out}: no <alternation>-a and -b folders with results")
    return pairs


def compare(pairs):
    """Rows of (configuration, flows, A medians, B medians, pooled A,
    pooled B, median of B/A, B ahead, pairs)."""
    keys = set()
    for s in pairs.values():
        keys |= set(s["a"].runs) & set(s["b"].runs)
    rows = []
    for base, flows in sorted(keys):
        a, b = [], []
        for n in sorted(pairs):
            ma, mb = pairs[n]["a"].med(base, flows), pairs[n]["b"].med(base, flows)
            if ma is not None and mb is not None:
                a.append(ma)
                b.append(mb)
        ratios = [y / x for x, y in zip(a, b) if x > 0]
        ahead = sum(y > x for x, y in zip(a, b))
        rows.append((base, flows, a, b, median(a), median(b), median(ratios), ahead, len(a)))
    return rows


def table(rows):
    out = [
        "| configuration | A, per alternation | B, per alternation | A | B | B/A, median of pairs | B ahead |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for base, flows, a, b, pa, pb, ratio, ahead, n in rows:
        out.append(
            f"| {base}-{flows} | {', '.join(f'{v:.3f}' for v in a)} "
            f"| {', '.join(f'{v:.3f}' for v in b)} | {pa:.3f} | {pb:.3f} "
            f"| {ratio:.3f} | {ahead} of {n} |"
        )
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    a = ap.parse_args()
    try:
        text = table(compare(sides(a.out)))
    except (ReportError, OSError) as e:
        print(f"ab.py: {e}", file=sys.stderr)
        return 2
    (a.out / "ab.md").write_text(text, encoding="utf-8")
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
