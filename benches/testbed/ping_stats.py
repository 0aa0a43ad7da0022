#!/usr/bin/env python3
"""Round-trip statistics from `ping -n` output on stdin, for run.sh's
latency rows: prints `sent,received,median_us,p99_us,mean_us,max_us`.

`sent` is the first argument (the -c count); received counts the replies
(lines with `time=`); p99 is the nearest-rank 99th percentile. With no
reply the four times are empty."""
import math
import re
import statistics
import sys


def main():
    if len(sys.argv) != 2 or not sys.argv[1].isdigit():
        sys.exit("usage: ping_stats.py SENT < ping-output")
    sent = int(sys.argv[1])
    rtts = sorted(
        float(m.group(1)) * 1000.0
        for m in (re.search(r"time=([0-9.]+) ms", line) for line in sys.stdin)
        if m
    )
    if not rtts:
        print(f"{sent},0,,,,")
        return
    p99 = rtts[max(0, math.ceil(0.99 * len(rtts)) - 1)]
    print(
        f"{sent},{len(rtts)},{statistics.median(rtts):.1f},{p99:.1f},"
        f"{statistics.fmean(rtts):.1f},{rtts[-1]:.1f}"
    )


if __name__ == "__main__":
    main()
