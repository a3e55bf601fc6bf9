"""Crash-safe progress for long measurement runs: ``<out>.partial/`` beside the output file.

``state.json`` pins what the run measures (device fingerprint, space, settings); every finished
measurement is one ``<name>.json`` (its statistics, the unit that measured it, what the runtime
reported) beside a ``<name>.npy`` of raw samples where there are any. Both are written atomically,
the ``.json`` last, so its presence means done. A run killed at any moment resumes from the files
that exist, and never measures one of them again.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from hwnas.atomic import atomic_write_bytes, atomic_write_text
from hwnas.backends.base import RoundResult
from hwnas.errors import OutputError, TableError
from hwnas.stats import LatencyStats


class Checkpoint:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @classmethod
    def open(cls, out: Path, state: dict[str, Any], *, resume: bool, force: bool) -> Checkpoint:
        """Start a new run's folder, or reopen an interrupted one when ``resume`` (its state must agree)."""
        ckpt = cls(out.with_name(out.name + ".partial"))
        state_file = ckpt.folder / "state.json"
        if ckpt.folder.exists() and not resume:
            if not force:
                raise OutputError(f"an interrupted run of {out.name} is in {ckpt.folder}.",
                                  "pass --resume to continue it, or --force to discard it and start over")
            shutil.rmtree(ckpt.folder)
        if resume and state_file.exists():
            try:
                old = json.loads(state_file.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise TableError(f"checkpoint {state_file} is unreadable ({exc}).",
                                 "pass --force to discard it and start over") from None
            if old != json.loads(json.dumps(state)):
                changed = sorted(k for k in state if old.get(k) != json.loads(json.dumps(state[k])))
                raise TableError(f"the interrupted run in {ckpt.folder} measured with other {', '.join(changed)}.",
                                 "resume with the same device, space and settings, or pass --force to start over")
        else:
            atomic_write_text(state_file, json.dumps(state, indent=1))
        return ckpt

    @staticmethod
    def name(key: str, part: str) -> str:
        return f"{hashlib.sha1(key.encode()).hexdigest()[:16]}-{part}"

    def has(self, name: str) -> bool:
        return (self.folder / f"{name}.json").exists()

    def save(self, name: str, result: RoundResult) -> None:
        if result.samples is not None:
            buf = io.BytesIO()
            np.save(buf, np.asarray(result.samples, dtype=np.float64))
            atomic_write_bytes(self.folder / f"{name}.npy", buf.getvalue())
        meta = {"stats": result.stats.to_dict(), "unit": result.unit, "info": result.info,
                "samples": result.samples is not None}
        atomic_write_text(self.folder / f"{name}.json", json.dumps(meta))

    def load(self, name: str) -> RoundResult:
        try:
            meta = json.loads((self.folder / f"{name}.json").read_text())
            samples = np.load(self.folder / f"{name}.npy") if meta["samples"] else None
            return RoundResult(LatencyStats.from_dict(meta["stats"]), samples, meta["unit"], meta["info"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise TableError(f"checkpoint entry {self.folder / name} is unreadable ({exc}).",
                             "pass --force to discard the interrupted run and start over") from None

    def save_info(self, name: str, info: dict) -> None:
        """A finished measurement that is not a timing (e.g. a memory probe's figures)."""
        atomic_write_text(self.folder / f"{name}.json", json.dumps({"info": info}))

    def load_info(self, name: str) -> dict:
        try:
            return json.loads((self.folder / f"{name}.json").read_text())["info"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise TableError(f"checkpoint entry {self.folder / name} is unreadable ({exc}).",
                             "pass --force to discard the interrupted run and start over") from None

    def discard(self, name: str) -> None:
        for suffix in (".json", ".npy"):
            (self.folder / f"{name}{suffix}").unlink(missing_ok=True)

    def done(self) -> list[str]:
        return sorted(p.stem for p in self.folder.glob("*.json") if p.name != "state.json")

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
