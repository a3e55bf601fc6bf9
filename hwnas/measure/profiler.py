"""Profile every candidate op of a search space on a device into a lookup table.

Order of work: convert every block (cached), then measure in ``rounds`` interleaved passes, each in
a fresh random order, so slow drift of the machine spreads over all entries instead of biasing some.
The per-invocation overhead is measured the same way on an empty model. Entries whose p90/median
exceeds ``spread_limit`` are measured once more and the steadier set kept; still-wide ones are
flagged ``unstable``. Every finished measurement is checkpointed (see :mod:`hwnas.measure.checkpoint`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from pydantic import Field

from hwnas import __version__
from hwnas.core.errors import OutputError
from hwnas.core.progress import ProgressBars
from hwnas.core.schema import NonNegativeInt, PositiveInt, settings
from hwnas.core.stats import LatencyStats, Statistic
from hwnas.devices.backends.base import Artifact, Backend, MeasureSettings, RoundResult, common_fingerprint, pool_rounds
from hwnas.devices.registry import Device
from hwnas.measure.checkpoint import Checkpoint
from hwnas.measure.convert import Recipe, convert_in_parallel, op_module
from hwnas.measure.footprint import block_footprint
from hwnas.measure.pool import Job, Pool, Unit, round_jobs
from hwnas.spaces import FREE_OPS, SearchSpace
from hwnas.spaces.keys import input_shape
from hwnas.tables.table import Entry, Table, table_stem

OVERHEAD = "overhead"


SpreadLimit = Annotated[float, Field(gt=1.0, allow_inf_nan=False)]  # p90/median: 1.0 is a perfectly steady entry


@settings("profile settings", "correct that flag of hwnas profile (--rounds, --spread-limit, --seed, ...)")
class ProfileOptions:
    settings: MeasureSettings = field(default_factory=MeasureSettings)
    rounds: PositiveInt = 3
    spread_limit: SpreadLimit = 1.3
    seed: NonNegativeInt = 0
    statistic: Statistic = "median"  # what the table's latencies are read as (hwnas.core.stats)
    jobs: PositiveInt = 1  # processes converting blocks side by side before any timing (not a measurement setting)

    @classmethod
    def reading(cls, statistic: str, rounds: int | None = None, min_seconds: float | None = None,
                **kw) -> ProfileOptions:
        """Options for a table read as ``statistic``: a min needs many moments to find the host's quiet ones (a
        shared host's slow spells last seconds), so it defaults to 9 rounds over 2 s per entry, the median to 3
        over 1 s. ``kw``: the other fields."""
        quick = statistic != "min"
        rounds = rounds if rounds is not None else (3 if quick else 9)
        min_seconds = min_seconds if min_seconds is not None else (1.0 if quick else 2.0)
        warmup, min_runs = kw.pop("warmup", 10), kw.pop("min_runs", 50)
        return cls(settings=MeasureSettings.at_least(warmup, min_runs, min_seconds), rounds=rounds,
                   statistic=statistic, **kw)

    def to_dict(self) -> dict:
        """The settings the measurements depend on (in the table and the checkpoint; ``jobs`` is not one)."""
        return {**self.settings.to_dict(), "rounds": self.rounds, "spread_limit": self.spread_limit,
                "seed": self.seed, "statistic": self.statistic}


@dataclass
class ProfileResult:
    table: Table
    path: Path
    reused: int  # measurements taken from an interrupted run's checkpoint
    measured: int  # measurements taken by this run


def default_table_path(device: Device, space: SearchSpace, folder: Path = Path("latency_tables")) -> Path:
    return folder / f"{table_stem(device.name, space.id, space.resolution)}.json"


def overhead_module():
    from torch import nn

    return nn.ReLU().eval()


def prepare_overhead(backend: Backend) -> Artifact:
    """The empty model whose timing is the per-call overhead every entry carries once."""
    return backend.prepare(overhead_module(), (1, 8), tag=OVERHEAD)


class Profiler:
    """One profiling run. Constructors store; :meth:`run` acts."""

    def __init__(self, device: Device, space: SearchSpace, out: Path, options: ProfileOptions | None = None) -> None:
        self.device, self.space, self.out = device, space, Path(out)
        self.options = options or ProfileOptions()

    def run(self, *, resume: bool = False, force: bool = False, progress: bool = True,
            log: Callable[[str], None] = lambda msg: None) -> ProfileResult:
        backend = self.device.backend_instance()
        backend.check_ready()
        units = backend.units()
        fingerprint = common_fingerprint(units)
        partial = self.out.with_name(self.out.name + ".partial")
        if self.out.exists() and not force:
            if not resume:
                raise OutputError(f"{self.out} exists.", "pass --force to overwrite it, or --out another path")
            if not partial.exists():  # a finished table: nothing to resume
                table = Table.load(self.out)
                table.check_fingerprint(fingerprint)
                return ProfileResult(table=table, path=self.out, reused=len(table.entries), measured=0)
        space_meta = self._space_meta()
        state = {"device": fingerprint, "space": space_meta, "settings": self.options.to_dict()}
        ckpt = Checkpoint.open(self.out, state, resume=resume, force=force)
        if ckpt.discarded:
            log(f"{len(ckpt.discarded)} unreadable checkpoint entries in {ckpt.folder} are measured again")
        reused = len(ckpt.done())
        with ProgressBars(progress) as bars:
            artifacts = self._prepare(backend, bars)
            pool_units = [Unit(label, b, artifacts) for label, b in units]
            rounds = self._measure_rounds(ckpt, pool_units, bars, log)
            stats = self._stats_with_retries(ckpt, pool_units, rounds, bars, log)
        entries = self._entries(backend, artifacts, rounds, stats)
        table = Table(fingerprint=fingerprint, space=space_meta, settings=self.options.to_dict(),
                      overhead=stats[OVERHEAD][0], entries=entries,
                      created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                      hwnas_version=__version__, extra=self._extra())
        table.save(self.out)
        measured = len(ckpt.done()) - reused
        ckpt.remove()
        return ProfileResult(table=table, path=self.out, reused=reused, measured=measured)

    # -- phases (a subclass that measures other entries overrides _space_meta, _prepare, _names, _entries) --
    def _space_meta(self) -> dict:
        """What the table's ``space`` field records (and a resumed run must agree on)."""
        return {"name": self.space.name, "id": self.space.id, "resolution": self.space.resolution,
                "width": self.space.width, "input_shape": list(self.space.input_shape)}

    def _extra(self) -> dict:
        """Further top-level fields of the table (none for a search space)."""
        return {}

    def _prepare(self, backend: Backend, bars: ProgressBars) -> dict[str, Artifact]:
        keys = self.space.measurable_keys()
        advance = bars.task("convert", len(keys) + 1)
        artifacts = {OVERHEAD: prepare_overhead(backend)}
        advance()
        tags = {key: f"{self.space.name}/{key}" for key in keys}
        if self.options.jobs > 1:  # fill the artifact cache in parallel; the loop below then finds every file
            s = self.space
            convert_in_parallel(self.device, [Recipe(op_module, (s.name, s.resolution, s.width, str(k)), input_shape(k),
                                                     tags[k]) for k in keys], self.options.jobs, advance)
        for key in keys:
            artifacts[str(key)] = backend.prepare(self.space.build_op(key), input_shape(key), tag=tags[key])
            if self.options.jobs <= 1:
                advance()
        return artifacts

    def _names(self) -> list[str]:
        return [OVERHEAD, *(str(k) for k in self.space.measurable_keys())]

    def _measure_rounds(self, ckpt: Checkpoint, units: list[Unit], bars: ProgressBars,
                        log: Callable[[str], None]) -> dict[str, list[RoundResult]]:
        """Every name once per round; each round in its own random order (interleaved, drift-fair)."""
        names, rounds = self._names(), self.options.rounds
        jobs = round_jobs(names, rounds, self.options.seed)
        advance = bars.task("measure", len(jobs))
        advance(sum(ckpt.has(j.file) for j in jobs))
        Pool(units, ckpt, advance, log).run(jobs, self.options.settings.split(rounds))
        return {n: [ckpt.load(Checkpoint.name(n, f"r{r}")) for r in range(rounds)] for n in names}

    def _stats_with_retries(self, ckpt: Checkpoint, units: list[Unit], rounds: dict[str, list[RoundResult]],
                            bars: ProgressBars, log: Callable[[str], None]
                            ) -> dict[str, tuple[LatencyStats, tuple[str, ...]]]:
        """Pooled statistics; wide entries get one fresh measurement and keep the steadier set."""
        limit = self.options.spread_limit
        stats = {n: pool_rounds(r) for n, r in rounds.items()}
        hot = {n for n, r in rounds.items() if rising(r)}
        if hot:
            log(f"{len(hot)} entries got slower round after round (thermal throttling?): measuring them again")
        wide = sorted({n for n, s in stats.items() if s.spread > limit} | hot)
        result = {n: (s, ()) for n, s in stats.items()}
        if not wide:
            return result
        jobs = [Job(n, "retry") for n in wide]
        advance = bars.task("re-measure", len(jobs))
        pool = Pool(units, ckpt, advance, log)
        pool.owner = {n: rounds[n][0].unit for n in wide if rounds[n][0].unit in {u.label for u in units}}
        pool.run(jobs, self.options.settings)
        for n in wide:
            retry = ckpt.load(Checkpoint.name(n, "retry")).stats
            best = retry if retry.spread < stats[n].spread or n in hot else stats[n]
            result[n] = (best, ("remeasured", "unstable") if best.spread > limit else ("remeasured",))
        return result

    def _entries(self, backend: Backend, artifacts: dict[str, Artifact], rounds: dict[str, list[RoundResult]],
                 stats: dict[str, tuple[LatencyStats, tuple[str, ...]]]) -> dict[str, Entry]:
        entries = {}
        for key in self.space.unique_keys():
            name = str(key)
            memory = block_footprint(self.space.build_op(key), input_shape(key), self.device.precision)
            if key.op in FREE_OPS:
                entries[name] = Entry(latency=None, memory=memory, flags=("free",))
                continue
            memory.update(backend.memory_report(artifacts[name]))
            for r in rounds[name]:  # what a remote tool reported (benchmark_model's footprint): the largest
                for field_name, value in r.info.get("memory", {}).items():
                    memory[field_name] = max(value, memory.get(field_name, value))
            lat, flags = stats[name]
            entries[name] = Entry(latency=lat, memory=memory, flags=flags, unit=rounds[name][0].unit)
        return entries


def rising(results: list[RoundResult], factor: float = 1.10) -> bool:
    """Each round slower than the one before, the last by ``factor`` or more over the first: throttling."""
    med = [r.stats.median for r in results]
    return len(med) >= 3 and all(b > a for a, b in zip(med, med[1:])) and med[-1] >= factor * med[0]


def profile(device: Device, space: SearchSpace, out: Path | None = None, *, options: ProfileOptions | None = None,
            resume: bool = False, force: bool = False, progress: bool = True,
            log: Callable[[str], None] = lambda msg: None) -> ProfileResult:
    """Profile ``space`` on ``device`` into the table at ``out``.

    ``out`` is a ``.json`` path, or a folder that receives ``<device>-<space>-<res>.json``
    (default ``latency_tables/``).
    """
    if out is None:
        out = default_table_path(device, space)
    elif Path(out).is_dir() or str(out).endswith(("/", "\\")):
        out = default_table_path(device, space, Path(out))
    return Profiler(device, space, out, options).run(resume=resume, force=force, progress=progress, log=log)
