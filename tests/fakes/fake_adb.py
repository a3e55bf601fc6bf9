#!/usr/bin/env python3
"""A test double of the ``adb`` command line, for tests only: never a device.

Phones live under ``$FAKE_ADB_ROOT/<serial>/`` (``props.json``; ``fs/`` is the phone's storage).
``benchmark_model`` (whatever binary was pushed) is emulated by running the pushed ``.tflite`` with the
host LiteRT interpreter and printing what a recent LiteRT benchmark_model prints. A phone disappears
after ``$FAKE_ADB_ROOT/<serial>/die_after`` benchmark runs (the file holds the count).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(os.environ["FAKE_ADB_ROOT"])


def phones() -> list[str]:
    return sorted(p.name for p in ROOT.iterdir() if (p / "props.json").exists() and not (p / "gone").exists())


def fs(serial: str, remote: str) -> Path:
    return ROOT / serial / "fs" / remote.lstrip("/")


def fail(msg: str, code: int = 1) -> None:
    print(msg, file=sys.stderr)
    sys.exit(code)


def benchmark(serial: str, args: list[str]) -> None:
    counter = ROOT / serial / "runs"
    runs = int(counter.read_text()) if counter.exists() else 0
    die_after = ROOT / serial / "die_after"
    if die_after.exists() and runs >= int(die_after.read_text()):
        (ROOT / serial / "gone").touch()
        fail(f"error: device '{serial}' not found")
    counter.write_text(str(runs + 1))
    flags = dict(a[2:].split("=", 1) for a in args if a.startswith("--") and "=" in a)
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    graph = fs(serial, flags["graph"])
    print("INFO: STARTING!")
    print(f"INFO: Num threads: [{flags.get('num_threads', 1)}]")
    print(f"INFO: Graph: [{flags['graph']}]")
    print(f"INFO: Loaded model {flags['graph']}")
    interp = Interpreter(model_path=str(graph), num_threads=int(flags.get("num_threads", 1)))
    interp.allocate_tensors()
    n_ops = len(interp._get_ops_details())
    if flags.get("use_xnnpack", "true") == "true":
        print(f"VERBOSE: Replacing {n_ops} out of {n_ops} node(s) with delegate (TfLiteXNNPackDelegate) node, "
              "yielding 1 partitions for the whole graph.")
    inp = interp.get_input_details()[0]
    interp.set_tensor(inp["index"], np.zeros(inp["shape"], dtype=np.float32))
    print(f"INFO: The input model file size (MB): {graph.stat().st_size / 2**20:g}")
    print("INFO: Initialized session in 1.0ms.")

    def timed(n_min: int, secs: float) -> list[float]:
        out: list[float] = []
        start = time.perf_counter()
        while len(out) < n_min or time.perf_counter() - start < secs:
            t0 = time.perf_counter()
            interp.invoke()
            out.append((time.perf_counter() - t0) * 1e6)
        return out

    def line(us: list[float]) -> str:
        a = np.array(us)
        return (f"INFO: count={len(a)} first={a[0]:.0f} curr={a[-1]:.0f} min={a.min():.0f} max={a.max():.0f} "
                f"avg={a.mean():g} std={a.std():.0f} p5={np.percentile(a, 5):.0f} median={np.median(a):.0f} "
                f"p95={np.percentile(a, 95):.0f}")

    warm_n = int(flags.get("warmup_runs", 1))
    print(f"INFO: Running benchmark for at least {warm_n} iterations and at least 0.5 seconds but terminate if "
          "exceeding 150 seconds.")
    print(line(timed(max(warm_n, 1), 0.0)) + "\n")
    n, secs = int(flags.get("num_runs", 50)), float(flags.get("min_secs", 1))
    print(f"INFO: Running benchmark for at least {n} iterations and at least {secs:g} seconds but terminate if "
          "exceeding 150 seconds.")
    regular = timed(n, secs)
    print(line(regular) + "\n")
    print(f"INFO: Inference timings in us: Init: 1000, First inference: {regular[0]:.0f}, Warmup (avg): 1, "
          f"Inference (avg): {np.mean(regular):g}")
    print("INFO: Memory footprint delta from the start of the tool (MB): init=1.5 overall=2.25")
    if flags.get("report_peak_memory_footprint") == "true":
        print("INFO: Overall peak memory footprint (MB) via periodic monitoring: 3.5")


def shell(serial: str, command: str) -> None:
    props = json.loads((ROOT / serial / "props.json").read_text())
    words = shlex.split(command)
    if words[0] == "taskset":
        words = words[2:]
    cmd = words[0]
    if cmd == "getprop":
        print(props.get(words[1], ""))
    elif cmd == "mkdir":
        fs(serial, words[-1]).mkdir(parents=True, exist_ok=True)
    elif cmd == "chmod":
        pass
    elif cmd == "stat":
        path = fs(serial, words[3])
        print(path.stat().st_size if path.exists() else -1)
    elif cmd == "cat" and "thermal" in command:
        print("\n".join(str(t) for t in props.get("thermal_millic", [36000, 41000])))
    elif cmd == "cat" and "scaling_governor" in command:
        print(props.get("governor", "schedutil"))
    elif re.search(r"/benchmark_model-[0-9a-f]+$", cmd):
        if not fs(serial, cmd).exists():
            fail(f"/system/bin/sh: {cmd}: not found", 127)
        benchmark(serial, words[1:])
    else:
        fail(f"/system/bin/sh: {cmd}: not supported by the fake", 127)


def main(argv: list[str]) -> None:
    if argv[:1] == ["devices"]:
        print("List of devices attached")
        for s in phones():
            print(f"{s}\tdevice")
        print()
        return
    if argv[:1] != ["-s"]:
        fail(f"fake adb: unsupported {argv}")
    serial, verb, rest = argv[1], argv[2], argv[3:]
    if serial not in phones():
        fail(f"error: device '{serial}' not found")
    if verb == "get-state":
        print("device")
    elif verb == "push":
        dest = fs(serial, rest[1])
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(rest[0], dest)
        print(f"{rest[0]}: 1 file pushed.")
    elif verb == "shell":
        shell(serial, " ".join(rest))
    else:
        fail(f"fake adb: unsupported verb {verb}")


if __name__ == "__main__":
    main(sys.argv[1:])
