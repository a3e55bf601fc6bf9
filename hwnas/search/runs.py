"""A search's run directory: everything needed to trust, reproduce and resume it.

    config.json        the resolved configuration, the table's fingerprint and SHA-256
    candidates.jsonl   every evaluated candidate, one JSON line each, flushed and fsynced as it is written
    state/             strategy checkpoints (atomic), e.g. the ProxylessNAS supernet between epochs
    final.json         the answer's retraining: per-epoch history (loss, valid accuracy, images/s), valid and test
                       accuracy, the data (splits, normalization, augmentation) and where it trained
    best.json          the best feasible architecture and its figures
    weights.pt         its trained weights (a state_dict; ``torch.load(..., weights_only=True)`` reads it)
    pareto.json        the non-dominated candidates evaluated (score on valid, predicted latency, memory), the choice
    pareto.png         score vs predicted latency, the front, the budget and its 90% line
    summary.md         what ran and what came out

Resuming: a killed run's ``candidates.jsonl`` is replayed as a cache, and the strategy, deterministic for its
seed, re-proposes the same candidates and gets the recorded results back instead of evaluating them again.
Only a torn *last* line (a kill mid-write: no newline) is dropped. Any other bad line is an error naming the
file and the line, never skipped: skipping it would silently lose a record, and stopping there (as a reader of
the kill case would) every record after it. Every file read back is checked against its schema here.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from hwnas.core.atomic import atomic_write_bytes, atomic_write_text, ensure_writable_dir
from hwnas.core.errors import ConfigError, OutputError
from hwnas.core.resume import refuse_other_settings
from hwnas.core.schema import NonNegativeInt, parse_json, read_json, validate

START_OVER = "pass --force to start the run over (or choose another --out)"
NOTES = "notes"  # config.json's key for what was said about the run (e.g. a foreign table); not compared on resume


class _Open(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")  # the record's other figures are for reading


class CandidateRow(_Open):
    """What a resumed search reads back of each ``candidates.jsonl`` line."""

    arch: str = Field(min_length=1, max_length=4096)
    score: float | None  # None: over the budget, never evaluated; -inf is a NASWOT score
    step: NonNegativeInt


class FinalRow(_Open):
    """What a resumed search reads back of ``final.json`` (the answer's retraining)."""

    arch: str = Field(min_length=1, max_length=4096)
    valid_accuracy: float = Field(ge=0, le=1)
    test_accuracy: float = Field(ge=0, le=1)
    data: dict[str, Any]


def read_record(path: Path, schema: type[BaseModel], fix: str = START_OVER) -> Any:
    """A run file (``config.json``, ``final.json``, ...) parsed and checked against ``schema``."""
    return validate(schema, read_json(path, "run file", fix), str(path), fix)


class RunDir:
    """A run directory; ``writer`` False for the ranks of a torchrun search other than 0, which read it (to resume
    in step) and write nothing."""

    def __init__(self, path: Path, writer: bool = True) -> None:
        self.path = Path(path)
        self.writer = writer

    @classmethod
    def open(cls, path: Path, config: dict[str, Any], *, resume: bool, force: bool, writer: bool = True) -> RunDir:
        """The run directory for ``config``, checked and (re)started; a reader (``writer`` False) opens it after
        the writer did, as it is."""
        run = cls(path, writer)
        if not writer:
            return run
        cfg_file = run.path / "config.json"
        if cfg_file.exists():
            if not (resume or force):
                raise OutputError(f"{run.path} already holds a run.",
                                  "pass --resume to continue it, --force to start over, or choose another --out")
            if resume:
                refuse_other_settings(read_record(cfg_file, dict[str, Any]), config, "run", run.path,
                                      "resume with the same options, or pass --force to start over", ignore=[NOTES])
            else:
                for f in ("candidates.jsonl", "best.json", "weights.pt", "pareto.json", "pareto.png", "summary.md"):
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

    def load_candidates(self) -> list[CandidateRow]:
        """Every line, checked; a torn last line (killed mid-write: no newline) is dropped and truncated away.

        Any other unreadable line raises a :class:`ConfigError` naming the file and the line."""
        path = self.candidates_file
        if not path.exists():
            return []
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read run file {path}: {exc.strerror or exc}.", START_OVER) from None
        lines = raw.splitlines(keepends=True)
        if lines and not lines[-1].endswith(b"\n"):  # the kill case: the last write was cut short
            torn = lines.pop()
            if self.writer:
                with open(path, "r+b") as f:
                    f.truncate(len(raw) - len(torn))
        rows = []
        for number, line in enumerate(lines, 1):
            source = f"run file {path}, line {number}"
            fix = (f"delete line {number} of {path} (that candidate is evaluated again on --resume), "
                   f"or {START_OVER}")
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError:
                raise ConfigError(f"{source} is not text.", fix) from None
            if not text.strip():
                raise ConfigError(f"{source} is empty.", fix)
            rows.append(validate(CandidateRow, parse_json(text, source, fix), source, fix))
        return rows

    def append_candidate(self, row: dict) -> None:
        if not self.writer:
            return
        with open(self.candidates_file, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())

    # -- state and results --------------------------------------------------------------------
    def state_file(self, name: str) -> Path:
        return self.path / "state" / name

    def write_json(self, name: str, data: Any) -> Path:
        if self.writer:
            atomic_write_text(self.path / name, json.dumps(data, indent=1))
        return self.path / name

    def write_text(self, name: str, text: str) -> Path:
        if self.writer:
            atomic_write_text(self.path / name, text)
        return self.path / name

    def write_bytes(self, path: Path, data: bytes) -> Path:
        """``data`` atomically at ``path`` (in this run: a state file, say)."""
        if self.writer:
            atomic_write_bytes(path, data)
        return path

    def save_weights(self, state_dict: dict, name: str = "weights.pt") -> Path:
        if not self.writer:
            return self.path / name
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
