"""Distribution of per-entry spread (p90 / median) in tables, and their profiling settings.

    python tools/bench/spread.py latency_tables/*.json
"""

from __future__ import annotations

import sys

import numpy as np

from hwnas.tables.table import Table


def main(paths: list[str]) -> None:
    print("| table | entries | spread p50 | p90 | p99 | max | > 1.3 | remeasured | overhead ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    for path in paths:
        t = Table.load(path)
        s = np.array([e.latency.spread for e in t.entries.values() if e.latency])
        q = np.percentile(s, [50, 90, 99])
        remeasured = sum("remeasured" in e.flags for e in t.entries.values())
        print(f"| {t.file_stem} | {len(s)} | {q[0]:.3f} | {q[1]:.3f} | {q[2]:.3f} | {s.max():.3f} | "
              f"{int((s > 1.3).sum())} | {remeasured} | {t.overhead.median:.4f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
