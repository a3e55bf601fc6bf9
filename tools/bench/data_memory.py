"""Peak memory of a search over an image folder: it must not grow with the folder (images stream from files).

Writes folders of N random 224-px JPEG images (10 class sub-folders) and runs ``hwnas search`` over each at 224
px (the shipped cpu 224 table) in a child process, whose peak RSS (``ru_maxrss``) is the figure: the NASWOT
search, the normalization sample, and the answer's evaluation on every valid and test image; with
``--train-epochs`` also a retrain on ``--train-limit`` images.

    python tools/bench/data_memory.py [--sizes 1000 5000] [--train-epochs 1 --train-limit 320]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
TABLE = ROOT / "latency_tables" / "cpu-proxyless-224.json"


def write_folder(root: Path, n: int, size: int = 224, seed: int = 0) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(n):
        d = root / f"class{i % 10}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(d / f"{i}.jpg", quality=85)
    return root


_WRAP = ("import atexit, resource, sys\n"
         "def peak():\n"
         "    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
         "    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
         "    print(f'PEAK_KB {own} {workers}', file=sys.stderr)\n"
         "atexit.register(peak)\n"
         "sys.argv = ['hwnas', *sys.argv[1:]]\n"
         "from hwnas.cli import main\n"
         "main()\n")


def search_peak(folder: Path, out: Path, epochs: int, limit: int | None) -> tuple[float, float, float]:
    """(peak RSS of the search process in MB, the largest of its data workers' in MB, seconds)."""
    cmd = [sys.executable, "-c", _WRAP, "search", "--table", str(TABLE), "--latency-ms", "1000", "--estimator",
           "naswot", "-n", "4", "--epochs", str(epochs), "--batch-size", "32", "--data", f"imagefolder:{folder}",
           "--train-device", "cpu", "--out", str(out), "--force", "-q"]
    if limit:
        cmd += ["--limit", str(limit)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(proc.stderr[-2000:])
    own, workers = next(line.split()[1:] for line in proc.stderr.splitlines() if line.startswith("PEAK_KB"))
    return int(own) / 1024, int(workers) / 1024, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[5000])
    ap.add_argument("--train-epochs", type=int, default=0)
    ap.add_argument("--train-limit", type=int, default=None)
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            folder = write_folder(Path(tmp) / f"images{n}", n)
            peak, workers, seconds = search_peak(folder, Path(tmp) / f"run{n}", args.train_epochs, args.train_limit)
            best = json.loads((Path(tmp) / f"run{n}" / "best.json").read_text())
            rows.append({"images": n, "peak_rss_mb": round(peak, 1), "worker_peak_rss_mb": round(workers, 1),
                         "seconds": round(seconds, 1), "splits": best["splits"]})
            print(f"{n} images at 224 px: peak RSS {peak:.0f} MB (data workers {workers:.0f} MB), {seconds:.0f} s, "
                  f"splits {best['splits']}", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
