"""Crash-safe progress for long measurement runs: ``<out>.partial/`` beside the output file.

``state.json`` pins what the run measures (device fingerprint, space, settings); every finished
measurement is one ``<name>.json`` (its statistics, the unit that measured it, what the runtime
reported) beside a ``<name>.npy`` of raw samples where there are any. Both are written atomically,
the ``.json`` last, so its presence means done. A run killed at any moment resumes from the files
that exist, and never measures one of them again.

A resumed run checks every entry against its schema first. One that cannot be read back (cut short by a
full disk, garbled, a folder where the file should be, samples that are not finite float times) is
discarded, listed in :attr:`Checkpoint.discarded`, and measured again; every other entry is kept.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from hwnas.core.atomic import atomic_write_bytes, atomic_write_text
from hwnas.core.errors import HwnasError, OutputError, TableError
from hwnas.core.resume import refuse_other_settings
from hwnas.core.schema import STRICT, read_json, validate
from hwnas.core.stats import LatencyStats, StatsRecord
from hwnas.devices.backends.base import RoundResult

_START_OVER = "pass --force to discard the interrupted run and start over"


# -- what an entry file holds -----------------------------------------------------------------------------------
class _Timing(BaseModel):
    model_config = STRICT
    stats: StatsRecord
    unit: str
    info: dict[str, Any]
    samples: bool


class _Info(BaseModel):
    model_config = STRICT
    info: dict[str, Any]


class Checkpoint:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.discarded: list[str] = []  # entries found unreadable on resume, to be measured again

    @classmethod
    def open(cls, out: Path, state: dict[str, Any], *, resume: bool, force: bool) -> Checkpoint:
        """Start a new run's folder, or reopen an interrupted one when ``resume`` (its state must agree)."""
        ckpt = cls(out.with_name(out.name + ".partial"))
        state_file = ckpt.folder / "state.json"
        if ckpt.folder.exists() and not ckpt.folder.is_dir():
            if not force:
                raise OutputError(f"{ckpt.folder} should be the folder of an interrupted run, but it is a file.",
                                  "remove it, or pass --force to replace it")
            ckpt.folder.unlink()
        if ckpt.folder.exists() and not resume:
            if not force:
                raise OutputError(f"an interrupted run of {out.name} is in {ckpt.folder}.",
                                  "pass --resume to continue it, or --force to discard it and start over")
            shutil.rmtree(ckpt.folder)
        if resume and ckpt.folder.is_dir() and not state_file.exists() and any(ckpt.folder.iterdir()):
            raise TableError(f"the interrupted run in {ckpt.folder} has no state.json: what it measured is unknown.",
                             _START_OVER)
        if resume and state_file.exists():
            refuse_other_settings(read_json(state_file, "checkpoint state", _START_OVER, TableError), state,
                                  "interrupted run", ckpt.folder,
                                  "resume with the same device, space and settings, or pass --force to start over")
            ckpt._discard_unreadable()
        else:
            atomic_write_text(state_file, json.dumps(state, indent=1))
        return ckpt

    @staticmethod
    def name(key: str, part: str) -> str:
        return f"{hashlib.sha1(key.encode()).hexdigest()[:16]}-{part}"

    def has(self, name: str) -> bool:
        return (self.folder / f"{name}.json").is_file()

    def save(self, name: str, result: RoundResult) -> None:
        if result.samples is not None:
            buf = io.BytesIO()
            np.save(buf, np.asarray(result.samples, dtype=np.float64))
            atomic_write_bytes(self.folder / f"{name}.npy", buf.getvalue())
        meta = {"stats": result.stats.to_dict(), "unit": result.unit, "info": result.info,
                "samples": result.samples is not None}
        atomic_write_text(self.folder / f"{name}.json", json.dumps(meta))

    def _read(self, name: str) -> RoundResult:
        """One timing entry, checked; any way of being unreadable is a :class:`TableError`."""
        where = self.folder / f"{name}.json"
        meta = validate(_Timing, read_json(where, "checkpoint entry", _START_OVER, TableError), str(where),
                        _START_OVER, TableError)
        samples = self._samples(name) if meta.samples else None
        return RoundResult(LatencyStats(**meta.stats.model_dump()), samples, meta.unit, meta.info)

    def _samples(self, name: str) -> np.ndarray:
        path = self.folder / f"{name}.npy"
        try:
            samples = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise TableError(f"checkpoint samples {path} are unreadable ({exc}).", _START_OVER) from None
        if samples.dtype != np.float64 or samples.ndim != 1 or not samples.size \
                or not np.all(np.isfinite(samples)) or np.any(samples < 0):
            raise TableError(f"checkpoint samples {path} are not a run's times (finite, ≥ 0, float64).",
                             _START_OVER)
        return samples

    def load(self, name: str) -> RoundResult:
        return self._read(name)

    def save_info(self, name: str, info: dict) -> None:
        """A finished measurement that is not a timing (e.g. a memory probe's figures)."""
        atomic_write_text(self.folder / f"{name}.json", json.dumps({"info": info}))

    def load_info(self, name: str) -> dict:
        where = self.folder / f"{name}.json"
        return validate(_Info, read_json(where, "checkpoint entry", _START_OVER, TableError), str(where),
                        _START_OVER, TableError).info

    def _check(self, path: Path) -> None:
        data = read_json(path, "checkpoint entry", _START_OVER, TableError)
        if isinstance(data, dict) and "stats" not in data and "info" in data:
            validate(_Info, data, str(path), _START_OVER, TableError)
        else:
            self._read(path.stem)

    def _discard_unreadable(self) -> None:
        """Drop every entry that cannot be read back, so that it is measured again (the rest is kept)."""
        for path in sorted(self.folder.glob("*.npy")):  # samples whose entry was never written: a save cut short
            if not (self.folder / f"{path.stem}.json").exists():
                self.discard(path.stem)
        for path in sorted(self.folder.glob("*.json")):
            if path.name == "state.json":
                continue
            try:
                self._check(path)
            except HwnasError:
                self.discarded.append(path.stem)
                self.discard(path.stem)

    def discard(self, name: str) -> None:
        for suffix in (".json", ".npy"):
            path = self.folder / f"{name}{suffix}"
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)

    def done(self) -> list[str]:
        return sorted(p.stem for p in self.folder.glob("*.json") if p.name != "state.json" and p.is_file())

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
