"""Profile every candidate op of a search space on a device into a lookup table.

Order of work: convert every block (cached), then measure in ``rounds`` interleaved passes, each in
a fresh random order, so slow drift of the machine spreads over all entries instead of biasing some.
The per-invocation overhead is measured the same way on an empty model. Entries whose p90/median
exceeds ``spread_limit`` are measured once more and the steadier set kept; still-wide ones are
flagged ``unstable``. Every finished measurement is checkpointed (see :mod:`hwnas.checkpoint`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hwnas import __version__
from hwnas.backends.base import Artifact, Backend, MeasureSettings, Session
from hwnas.checkpoint import Checkpoint
from hwnas.devices import Device
from hwnas.errors import ConfigError, OutputError
from hwnas.footprint import block_footprint
from hwnas.spaces import FREE_OPS, OpKey, SearchSpace
from hwnas.stats import LatencyStats, summarize
from hwnas.tables import Entry, Table, table_stem

OVERHEAD = "overhead"


@dataclass(frozen=True)
class ProfileOptions:
    settings: MeasureSettings = field(default_factory=MeasureSettings)
    rounds: int = 3
    spread_limit: float = 1.3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ConfigError(f"rounds must be at least 1, got {self.rounds}.", "pass --rounds 1 or more")
        if self.spread_limit <= 1.0:
            raise ConfigError(f"spread limit {self.spread_limit} must exceed 1.0 (p90/median).", "use e.g. 1.3")

    def to_dict(self) -> dict:
        return {**self.settings.to_dict(), "rounds": self.rounds, "spread_limit": self.spread_limit,
                "seed": self.seed}


@dataclass
class ProfileResult:
    table: Table
    path: Path
    reused: int  # measurements taken from an interrupted run's checkpoint
    measured: int  # measurements taken by this run


def input_shape(key: OpKey, batch: int = 1) -> tuple[int, ...]:
    """NCHW (or NC) shape of a key's input."""
    return (batch, key.inp[2], key.inp[0], key.inp[1]) if len(key.inp) == 3 else (batch, *key.inp)


def default_table_path(device: Device, space: SearchSpace, folder: Path = Path("latency_tables")) -> Path:
    return folder / f"{table_stem(device.name, space.id, space.resolution)}.json"


def _overhead_module():
    from torch import nn

    return nn.ReLU().eval()


class _Progress:
    """A rich progress display with ETA on stderr, or nothing."""

    def __init__(self, enabled: bool) -> None:
        self.bar = None
        if enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(TextColumn("{task.description:<12}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                                console=Console(stderr=True))

    def __enter__(self) -> _Progress:
        if self.bar:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.bar:
            self.bar.__exit__(*exc)

    def task(self, description: str, total: int) -> Callable[[int], None]:
        if not self.bar:
            return lambda n=1: None
        tid = self.bar.add_task(description, total=total)
        return lambda n=1: self.bar.advance(tid, n)


class Profiler:
    """One profiling run. Constructors store; :meth:`run` acts."""

    def __init__(self, device: Device, space: SearchSpace, out: Path, options: ProfileOptions | None = None) -> None:
        self.device, self.space, self.out = device, space, Path(out)
        self.options = options or ProfileOptions()

    def run(self, *, resume: bool = False, force: bool = False, progress: bool = True) -> ProfileResult:
        backend = self.device.backend_instance()
        backend.check_ready()
        fingerprint = backend.fingerprint()
        partial = self.out.with_name(self.out.name + ".partial")
        if self.out.exists() and not force:
            if not resume:
                raise OutputError(f"{self.out} exists.", "pass --force to overwrite it, or --out another path")
            if not partial.exists():  # a finished table: nothing to resume
                table = Table.load(self.out)
                table.check_fingerprint(fingerprint)
                return ProfileResult(table=table, path=self.out, reused=len(table.entries), measured=0)
        space_meta = {"name": self.space.name, "id": self.space.id, "resolution": self.space.resolution,
                      "width": self.space.width, "input_shape": list(self.space.input_shape)}
        state = {"device": fingerprint, "space": space_meta, "settings": self.options.to_dict()}
        ckpt = Checkpoint.open(self.out, state, resume=resume, force=force)
        reused = len(ckpt.done())
        keys = [str(k) for k in self.space.measurable_keys()]
        with _Progress(progress) as bars:
            artifacts = self._prepare(backend, bars)
            sessions = _Sessions(backend, artifacts)
            samples = self._measure_rounds(ckpt, sessions, [OVERHEAD, *keys], bars)
            stats = self._stats_with_retries(ckpt, sessions, samples, bars)
        entries = self._entries(backend, artifacts, stats)
        table = Table(fingerprint=fingerprint, space=space_meta, settings=self.options.to_dict(),
                      overhead=stats[OVERHEAD][0], entries=entries,
                      created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                      hwnas_version=__version__)
        table.save(self.out)
        measured = len(ckpt.done()) - reused
        ckpt.remove()
        return ProfileResult(table=table, path=self.out, reused=reused, measured=measured)

    # -- phases ---------------------------------------------------------------------------------
    def _prepare(self, backend: Backend, bars: _Progress) -> dict[str, Artifact]:
        keys = self.space.measurable_keys()
        advance = bars.task("convert", len(keys) + 1)
        artifacts = {OVERHEAD: backend.prepare(_overhead_module(), (1, 8), tag=OVERHEAD)}
        advance()
        for key in keys:
            tag = f"{self.space.name}/{key}"
            artifacts[str(key)] = backend.prepare(self.space.build_op(key), input_shape(key), tag=tag)
            advance()
        return artifacts

    def _measure_rounds(self, ckpt: Checkpoint, sessions: _Sessions, names: list[str],
                        bars: _Progress) -> dict[str, list[np.ndarray]]:
        rounds = self.options.rounds
        per_round = self.options.settings.split(rounds)
        advance = bars.task("measure", len(names) * rounds)
        advance(sum(ckpt.has(Checkpoint.name(n, f"r{r}")) for n in names for r in range(rounds)))
        for r in range(rounds):
            order = np.random.default_rng([self.options.seed, r]).permutation(len(names))
            for i in order:
                part = Checkpoint.name(names[i], f"r{r}")
                if not ckpt.has(part):
                    ckpt.save(part, Backend.time_session(sessions[names[i]], per_round))
                    advance()
        return {n: [ckpt.load(Checkpoint.name(n, f"r{r}")) for r in range(rounds)] for n in names}

    def _stats_with_retries(self, ckpt: Checkpoint, sessions: _Sessions, samples: dict[str, list[np.ndarray]],
                            bars: _Progress) -> dict[str, tuple[LatencyStats, tuple[str, ...]]]:
        """Pooled statistics; wide entries get one fresh measurement and keep the steadier set."""
        limit = self.options.spread_limit
        stats = {n: summarize(np.concatenate(s)) for n, s in samples.items()}
        wide = sorted(n for n, s in stats.items() if s.spread > limit)
        advance = bars.task("re-measure", len(wide)) if wide else (lambda n=1: None)
        result = {n: (s, ()) for n, s in stats.items()}
        for n in wide:
            part = Checkpoint.name(n, "retry")
            if not ckpt.has(part):
                ckpt.save(part, Backend.time_session(sessions[n], self.options.settings))
            retry = summarize(ckpt.load(part))
            best = retry if retry.spread < stats[n].spread else stats[n]
            result[n] = (best, ("remeasured", "unstable") if best.spread > limit else ("remeasured",))
            advance()
        return result

    def _entries(self, backend: Backend, artifacts: dict[str, Artifact],
                 stats: dict[str, tuple[LatencyStats, tuple[str, ...]]]) -> dict[str, Entry]:
        entries = {}
        for key in self.space.unique_keys():
            name = str(key)
            module = self.space.build_op(key)
            memory = block_footprint(module, input_shape(key), self.device.precision)
            if key.op in FREE_OPS:
                entries[name] = Entry(latency=None, memory=memory, flags=("free",))
                continue
            memory.update(backend.memory_report(artifacts[name]))
            lat, flags = stats[name]
            entries[name] = Entry(latency=lat, memory=memory, flags=flags)
        return entries


class _Sessions:
    """Load each artifact once, on first use, and keep it for later rounds."""

    def __init__(self, backend: Backend, artifacts: dict[str, Artifact]) -> None:
        self.backend, self.artifacts = backend, artifacts
        self.cache: dict[str, Session] = {}

    def __getitem__(self, name: str) -> Session:
        if name not in self.cache:
            self.cache[name] = self.backend.load(self.artifacts[name])
        return self.cache[name]


def profile(device: Device, space: SearchSpace, out: Path | None = None, *, options: ProfileOptions | None = None,
            resume: bool = False, force: bool = False, progress: bool = True) -> ProfileResult:
    """Profile ``space`` on ``device`` into the table at ``out``.

    ``out`` is a ``.json`` path, or a folder that receives ``<device>-<space>-<res>.json``
    (default ``latency_tables/``).
    """
    if out is None:
        out = default_table_path(device, space)
    elif Path(out).is_dir() or str(out).endswith(("/", "\\")):
        out = default_table_path(device, space, Path(out))
    return Profiler(device, space, out, options).run(resume=resume, force=force, progress=progress)
