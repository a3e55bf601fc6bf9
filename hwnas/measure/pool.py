"""Spread measurement jobs over the units of one device kind (several phones of one model).

Each unit works one job at a time in its own thread (the per-device lock), health-checked before
each job. Every op key sticks to the unit that first measured it, so an entry's rounds never mix
units. A unit that is lost mid-run is dropped: its unfinished keys lose their partial rounds and go
back to the queue for the others; finished entries are kept. With one unit this is a plain loop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from hwnas.core.errors import DeviceLost, DeviceUnavailable
from hwnas.devices.backends.base import Artifact, Backend, MeasureSettings, RoundResult, Session
from hwnas.measure.checkpoint import Checkpoint


@dataclass(frozen=True)
class Job:
    name: str  # entry name (op key string, or the overhead model)
    part: str  # "r0", "r1", ... or "retry"

    @property
    def file(self) -> str:
        return Checkpoint.name(self.name, self.part)


def round_jobs(names: list[str], rounds: int, seed: int) -> list[Job]:
    """Every name once per round, each round in its own random order (seeded by ``seed`` and the round), so
    a slow drift of the host lands on different entries in each round instead of on whichever run last."""
    return [Job(names[i], f"r{r}") for r in range(rounds)
            for i in np.random.default_rng([seed, r]).permutation(len(names))]


@dataclass
class Unit:
    """One physical device: its backend and the sessions loaded on it."""

    label: str
    backend: Backend
    artifacts: dict[str, Artifact]
    sessions: dict[str, Session] = field(default_factory=dict)

    def session(self, name: str) -> Session:
        if name not in self.sessions:
            self.sessions[name] = self.backend.load(self.artifacts[name])
        return self.sessions[name]

    def measure(self, job: Job, settings: MeasureSettings) -> RoundResult:
        self.backend.check_alive()
        result = self.session(job.name).time(settings)
        return RoundResult(result.stats, result.samples, self.label, result.info)


class Pool:
    def __init__(self, units: list[Unit], ckpt: Checkpoint, advance: Callable[[int], None] = lambda n=1: None,
                 log: Callable[[str], None] = lambda msg: None) -> None:
        if not units:
            raise DeviceUnavailable("no device unit to measure on.", "attach a device")
        self.units, self.ckpt, self.advance, self.log = units, ckpt, advance, log
        self.cond = threading.Condition()
        self.pending: list[Job] = []
        self.owner: dict[str, str] = {}
        self.busy: set[str] = set()
        self.lost: list[str] = []
        self.error: BaseException | None = None

    def run(self, jobs: list[Job], settings: dict[str, MeasureSettings] | MeasureSettings) -> None:
        """Measure every job not yet in the checkpoint. ``settings``: one for all, or per job part."""
        self.settings = settings
        alive = {u.label for u in self.units}
        for name in dict.fromkeys(j.name for j in jobs):  # who measured what, in an earlier run
            owners = {self.ckpt.load(j.file).unit for j in jobs if j.name == name and self.ckpt.has(j.file)}
            if len(owners) == 1 and owners <= alive:
                self.owner[name] = owners.pop()
            elif owners and not all(self.ckpt.has(j.file) for j in jobs if j.name == name):
                self._release_partial(name, jobs)  # partial rounds from an absent unit, or from several
        self.jobs = jobs
        self.pending = [j for j in jobs if not self.ckpt.has(j.file)]
        if len(self.units) == 1:
            self._work(self.units[0])
        else:
            threads = [threading.Thread(target=self._work, args=(u,), name=f"unit-{u.label}") for u in self.units]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        if self.error is not None:
            raise self.error
        if self.pending:
            raise DeviceUnavailable(f"every unit was lost ({', '.join(self.lost)}); {len(self.pending)} "
                                    "measurements remain.", "reattach the devices and rerun with --resume")

    def _settings(self, job: Job) -> MeasureSettings:
        return self.settings if isinstance(self.settings, MeasureSettings) else self.settings[job.part]

    def _next(self, unit: Unit) -> Job | None:
        with self.cond:
            while True:
                if self.error is not None:
                    return None
                job = next((j for j in self.pending if self.owner.get(j.name, unit.label) == unit.label), None)
                if job is not None:
                    self.pending.remove(job)
                    self.owner[job.name] = unit.label
                    self.busy.add(unit.label)
                    return job
                if not self.pending or not (self.busy - {unit.label}):
                    return None
                self.cond.wait()  # another unit may be lost and release its keys

    def _work(self, unit: Unit) -> None:
        while (job := self._next(unit)) is not None:
            try:
                result = unit.measure(job, self._settings(job))
                self.ckpt.save(job.file, result)
                self.advance(1)
            except DeviceLost as exc:
                self._lose(unit, job, exc)
                return
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which re-raises it
                with self.cond:
                    self.error = self.error or exc
                    self.cond.notify_all()
                return
            finally:
                with self.cond:
                    self.busy.discard(unit.label)
                    self.cond.notify_all()

    def _lose(self, unit: Unit, job: Job, exc: DeviceLost) -> None:
        with self.cond:
            self.lost.append(unit.label)
            self.log(f"lost unit {unit.label}: {exc.message}; its unfinished work moves to the others")
            self.pending.insert(0, job)
            for name in [n for n, o in self.owner.items() if o == unit.label]:
                del self.owner[name]
                mine = [j for j in self.jobs if j.name == name]
                done = [j for j in mine if self.ckpt.has(j.file)]
                if len(done) < len(mine):  # unfinished: all its rounds go back to the queue
                    self._release_partial(name, self.jobs)
                    self.pending[:0] = [j for j in mine if j not in self.pending]
                    self.advance(-len(done))
            self.cond.notify_all()

    def _release_partial(self, name: str, jobs: list[Job]) -> None:
        """Drop an unfinished key's finished rounds, so that one unit measures all of them."""
        for j in jobs:
            if j.name == name and self.ckpt.has(j.file):
                self.ckpt.discard(j.file)
