"""A search's run directory: everything needed to trust, reproduce and resume it.

    config.json        the resolved configuration, the table's fingerprint and SHA-256
    candidates.jsonl   every evaluated candidate, one JSON line each, flushed and fsynced as it is written
    state/             strategy checkpoints (atomic), e.g. the ProxylessNAS supernet between epochs
    best.json          the best feasible architecture and its figures
    weights.pt         its trained weights (a state_dict; ``torch.load(..., weights_only=True)`` reads it)
    pareto.png         accuracy (or score) vs predicted latency, the budget line
    summary.md         what ran and what came out

Resuming: a killed run's ``candidates.jsonl`` is replayed as a cache (a torn last line is dropped), and the
strategy, deterministic for its seed, re-proposes the same candidates and gets the recorded results back
instead of evaluating them again.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from hwnas.atomic import atomic_write_bytes, atomic_write_text, ensure_writable_dir
from hwnas.errors import OutputError, TableError


class RunDir:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @classmethod
    def open(cls, path: Path, config: dict[str, Any], *, resume: bool, force: bool) -> RunDir:
        run = cls(path)
        cfg_file = run.path / "config.json"
        if cfg_file.exists():
            if not (resume or force):
                raise OutputError(f"{run.path} already holds a run.",
                                  "pass --resume to continue it, --force to start over, or choose another --out")
            if resume:
                old = json.loads(cfg_file.read_text())
                if old != json.loads(json.dumps(config)):
                    changed = sorted(k for k in set(old) | set(config)
                                     if old.get(k) != json.loads(json.dumps(config.get(k))))
                    raise TableError(f"the run in {run.path} was started with other {', '.join(changed)}.",
                                     "resume with the same options, or pass --force to start over")
            else:
                for f in ("candidates.jsonl", "best.json", "weights.pt", "pareto.png", "summary.md"):
                    (run.path / f).unlink(missing_ok=True)
                for f in (run.path / "state").glob("*"):
                    f.unlink()
        ensure_writable_dir(run.path)
        atomic_write_text(cfg_file, json.dumps(config, indent=1))
        return run

    # -- candidates ---------------------------------------------------------------------------
    @property
    def candidates_file(self) -> Path:
        return self.path / "candidates.jsonl"

    def load_candidates(self) -> list[dict]:
        """Every complete line; a torn last line (killed mid-write) is dropped and truncated away."""
        if not self.candidates_file.exists():
            return []
        raw = self.candidates_file.read_bytes()
        rows, good = [], 0
        for line in raw.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
            good += len(line)
        if good != len(raw):
            with open(self.candidates_file, "r+b") as f:
                f.truncate(good)
        return rows

    def append_candidate(self, row: dict) -> None:
        with open(self.candidates_file, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())

    # -- state and results --------------------------------------------------------------------
    def state_file(self, name: str) -> Path:
        return self.path / "state" / name

    def write_json(self, name: str, data: Any) -> Path:
        atomic_write_text(self.path / name, json.dumps(data, indent=1))
        return self.path / name

    def save_weights(self, state_dict: dict, name: str = "weights.pt") -> Path:
        import io

        import torch

        buf = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in state_dict.items()}, buf)
        atomic_write_bytes(self.path / name, buf.getvalue())
        return self.path / name


def file_sha256(path: Path) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError as exc:
        raise OutputError(f"cannot read {path}: {exc.strerror or exc}.", "check the path") from None
