"""Crash-safe progress for long measurement runs: ``<out>.partial/`` beside the output file.

``state.json`` pins what the run measures (device fingerprint, space, settings); every finished
measurement is one ``.npy`` of raw samples, written atomically. A run killed at any moment resumes
from the files that exist, and never measures one of them again.
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
from hwnas.errors import OutputError, TableError


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

    def _path(self, name: str) -> Path:
        return self.folder / f"{name}.npy"

    def has(self, name: str) -> bool:
        return self._path(name).exists()

    def save(self, name: str, samples: np.ndarray) -> None:
        buf = io.BytesIO()
        np.save(buf, np.asarray(samples, dtype=np.float64))
        atomic_write_bytes(self._path(name), buf.getvalue())

    def load(self, name: str) -> np.ndarray:
        return np.load(self._path(name))

    def done(self) -> list[str]:
        return sorted(p.stem for p in self.folder.glob("*.npy"))

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
