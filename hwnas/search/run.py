"""One search, end to end: table → budget check → strategy → retrain the answer → run directory.

:func:`run_search` is what ``hwnas search`` calls. The budget is checked on the table before anything
is built (an impossible one raises :class:`InfeasibleBudget` with the smallest achievable latency), the
strategy's answer is checked against it again, and the answer is trained from scratch on the dataset
(``final_epochs``) for the weights and the accuracy the summary reports.

Settings are validated where they are made (:class:`SearchConfig`, with the strategy's options and the
training settings), so nothing is written for a search that cannot run. A search that names its device
applies the table's fingerprint rule (:meth:`hwnas.tables.table.Table.check_fingerprint`); a mismatch the user
allowed is said on stderr and kept in ``config.json`` (``notes``), ``best.json`` and ``summary.md``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from hwnas.core.errors import ConfigError
from hwnas.core.progress import ProgressBars
from hwnas.core.schema import NonNegativeInt, Positive, PositiveInt, settings
from hwnas.cost.model import CostModel
from hwnas.learn.data import Dataset, check_spec
from hwnas.learn.distributed import barrier, world
from hwnas.learn.loop import TrainConfig, build_for, evaluate, train
from hwnas.learn.runtime import cpu_contiguous
from hwnas.search import STRATEGIES
from hwnas.search.base import Candidate, SearchContext
from hwnas.search.budget import BAND, MB, Budget, Feasibility
from hwnas.search.estimators import ESTIMATORS, make_estimator
from hwnas.search.executors import EXECUTORS, check_address, make_executor, probe
from hwnas.search.pareto import pareto_plot, pareto_record
from hwnas.search.runs import NOTES, FinalRow, RunDir, file_sha256, read_record
from hwnas.spaces.arch import Arch
from hwnas.tables.table import Table

Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]  # numpy's and torch's seeds alike


@settings("search settings", "correct it on the command line (keys and flags share names: latency_ms is "
          "--latency-ms, final_epochs is --epochs)")
class SearchConfig:
    table: Annotated[str, Field(min_length=1)]
    strategy: str = "evolution"
    latency_ms: Positive | None = None
    memory_mb: Positive | None = None
    estimator: str = "naswot"
    data: str = "digits"
    evaluations: PositiveInt = 40
    seed: Seed = 0
    estimator_epochs: PositiveInt = 3
    final_epochs: NonNegativeInt = 10
    batch_size: PositiveInt = 64
    lr: Positive = 0.05
    optimizer: str = "sgd"
    label_smoothing: float = 0.0
    limit: PositiveInt | None = None
    augment: Literal["auto", "flip-crop", "crop", "none"] = "auto"  # training augmentation (hwnas.learn.transforms)
    train_device: str = "auto"  # where training runs (hwnas.learn.runtime): auto, cpu, cuda, cuda:N
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    workers: NonNegativeInt | None = None  # data-loading processes (None: as the runtime sees fit)
    compile: bool = False  # torch.compile the networks that train
    executor: str = "local"
    address: str | None = None
    options: dict[str, Any] = field(default_factory=dict)  # strategy-specific keyword arguments
    device: str | None = None  # the device the table must have been measured on (its fingerprint), if given
    allow_foreign_table: bool = False  # --allow-foreign-table: use a mismatching table, with a warning

    def __post_init__(self) -> None:
        STRATEGIES.get(self.strategy), ESTIMATORS.get(self.estimator), EXECUTORS.get(self.executor)  # known names
        if self.latency_ms is None and self.memory_mb is None:
            raise ConfigError("a search needs a budget.", "give --latency-ms and/or --memory-mb")
        if self.memory_mb is not None and not math.isfinite(self.memory_mb * MB):
            raise ConfigError(f"--memory-mb {self.memory_mb:g} is beyond any memory.", "give the budget in MB")
        if self.strategy == "memnet" and self.memory_mb is None:
            raise ConfigError("the memnet strategy needs a memory bound.", "add --memory-mb")
        check_address(self.executor, self.address)
        check_spec(self.data)
        self.train_config(0)  # validates the training options before anything is written
        _strategy(self)  # and the strategy's (its constructor only stores them)

    def train_config(self, epochs: int) -> TrainConfig:
        return TrainConfig(epochs=epochs, batch_size=self.batch_size, lr=self.lr, optimizer=self.optimizer,
                           label_smoothing=self.label_smoothing, seed=self.seed, device=self.train_device,
                           amp=self.amp, workers=self.workers, compile=self.compile)

    def to_dict(self) -> dict:
        d = asdict(self)
        # where it runs, and how the table was checked, do not change the result: a run may resume without them
        for key in ("executor", "address", "device", "allow_foreign_table", "train_device", "workers"):
            d.pop(key)
        return d


@dataclass
class SearchResult:
    arch: Arch
    candidate: Candidate
    valid_accuracy: float
    test_accuracy: float
    data: dict  # the splits' sizes and origin, normalization, augmentation (Dataset.describe)
    run_dir: Path
    evaluations: int
    reused: int
    main: bool = True  # rank 0 (the one that writes and reports) of a torchrun search
    notes: list[str] = field(default_factory=list)  # what the strategy said of its answer (e.g. budget left unused)


def _strategy(cfg: SearchConfig):
    opts = dict(cfg.options)
    if cfg.strategy == "proxyless":
        opts.setdefault("train", cfg.train_config(0))
    if cfg.strategy == "reference":  # the other widths' tables: beside the search's own, unless given
        opts.setdefault("tables", str(Path(cfg.table).parent))
    try:
        return STRATEGIES.get(cfg.strategy)(**opts)
    except TypeError as exc:
        raise ConfigError(f"bad option for the {cfg.strategy} strategy: {exc}.", "check the strategy options") from None


def check_table(cfg: SearchConfig, table: Table) -> str:
    """The fingerprint rule, when the search names its device: "" (a match), a warning (a mismatch the user
    allowed with --allow-foreign-table), or a :class:`~hwnas.core.errors.TableError`. Without a device the table
    names its own and is taken as it is."""
    if cfg.device is None:
        return ""
    from hwnas.devices.registry import get_device

    return table.check_fingerprint(get_device(cfg.device).backend_instance().fingerprint(),
                                   allow_foreign=cfg.allow_foreign_table)


def run_search(cfg: SearchConfig, out: Path, *, resume: bool = False, force: bool = False,
               progress: bool = True, log: Callable[[str], None] = lambda msg: None) -> SearchResult:
    """Search, retrain the answer and write the run directory; ``log`` hears warnings (e.g. a foreign table).

    Under torchrun every rank runs this, in step; rank 0 writes the run directory and shows progress."""
    table = Table.load(Path(cfg.table))
    warning = check_table(cfg, table)
    place = world()
    if warning and place.main:
        log(warning)
    model = CostModel(table)
    budget = Budget(cfg.latency_ms, cfg.memory_mb * MB if cfg.memory_mb is not None else None)
    feasibility = Feasibility(model, budget)
    feasibility.check_possible()  # before building anything
    probe(cfg.address)  # a cluster that is not there: said in seconds, before the run directory is written
    strategy = _strategy(cfg)
    strategy.check(feasibility)  # e.g. the reference's width tables: refused before anything is written
    cfg.train_config(0).runtime()  # the training device exists (before anything is written)
    config = {**cfg.to_dict(), "space": model.space.id, "resolution": model.space.resolution,
              "table_sha256": file_sha256(Path(cfg.table)), "table_fingerprint": table.fingerprint,
              NOTES: {"table_warning": warning} if warning else {}}
    if place.main:
        run = RunDir.open(Path(out), config, resume=resume, force=force)
    barrier()  # the other ranks read what rank 0 opened (a shared file system across nodes)
    if not place.main:
        run = RunDir.open(Path(out), config, resume=resume, force=force, writer=False)
    est_cfg = cfg.train_config(cfg.estimator_epochs)
    estimator = make_estimator(cfg.estimator, data=cfg.data, resolution=model.space.resolution, seed=cfg.seed,
                               train_config=est_cfg, limit=cfg.limit, space_id=model.space.id, augment=cfg.augment)
    executor = make_executor(cfg.executor, cfg.address)
    try:
        with ProgressBars(progress and place.main) as bars:
            estimator.progress = lambda what, total: bars.task(what, total, transient=True)
            ctx = SearchContext(feasibility, estimator, executor, run, seed=cfg.seed,
                                progress=bars.task(f"search ({cfg.strategy})", cfg.evaluations)
                                if strategy.evaluates else None,
                                max_evaluations=cfg.evaluations)
            arch = strategy.run(ctx)
            cand = ctx.price_arch(arch)
            if not cand.feasible:
                raise RuntimeError(f"strategy {cfg.strategy} returned {arch}, over the budget")  # a bug, not input
            final = _final_training(cfg, arch, estimator.dataset, run, bars)
    finally:
        executor.close()
    result = SearchResult(arch, cand, final.valid_accuracy, final.test_accuracy, final.data, run.path,
                          ctx.evaluations, ctx.reused, place.main, list(ctx.notes))
    _write_outputs(run, cfg, ctx.feasibility_of(arch).model, result, ctx.history, budget, warning,
                   estimator.accuracy or strategy.scores_accuracy, bool(feasibility.binding))
    return result


def _final_training(cfg: SearchConfig, arch: Arch, data: Dataset, run: RunDir, bars: ProgressBars) -> FinalRow:
    """The answer trained from scratch on train (valid after every epoch), then its accuracy on test: the one
    split no search decision saw."""
    done = run.path / "final.json"
    if done.exists() and (run.path / "weights.pt").exists():
        saved = read_record(done, FinalRow, f"delete {done} (the answer is retrained on --resume), or pass --force "
                                            "to start the run over")
        if saved.arch == str(arch):
            return saved
    tc = cfg.train_config(cfg.final_epochs)
    rt = tc.runtime()
    net = build_for(arch, data.classes, cfg.seed)
    res = train(net, data, tc, progress=bars.task, label="retrain best")
    test_accuracy = evaluate(rt.place(net), data.test, rt, tc.batch_size)
    cpu_contiguous(net)
    record = {"arch": str(arch), "valid_accuracy": res.valid_accuracy, "test_accuracy": test_accuracy,
              "history": res.history, "train": tc.to_dict(), "classes": data.classes, "data": data.describe(),
              "runtime": rt.describe()}
    run.save_weights(net.state_dict())
    run.write_json("final.json", record)
    return FinalRow.model_validate(record)


def _write_outputs(run: RunDir, cfg: SearchConfig, model: CostModel, result: SearchResult,
                   history: list[Candidate], budget: Budget, warning: str = "", accuracy: bool = False,
                   binding: bool = True) -> None:
    """``best.json``, ``pareto.json`` (+ ``.png``) and ``summary.md``; ``model`` is the answer's own space setting's,
    ``accuracy`` whether the scores are validation accuracies, ``binding`` whether the budget binds."""
    p = model.predict(result.arch, planned=False)  # params and MACs; memory and latency are the candidate's
    c = result.candidate  # the figures candidates.jsonl and the CLI report: one memory definition
    splits = result.data.get("splits", {})
    best = {"arch": str(result.arch), "id": result.arch.id, "valid_accuracy": result.valid_accuracy,
            "test_accuracy": result.test_accuracy, "splits": splits, "test_split": result.data.get("test_split"),
            "search_score": c.score, "reward": c.reward, "budget_used": c.usage, "notes": result.notes,
            "latency_ms": c.latency_ms, "weight_bytes": c.weight_bytes,
            "peak_activation_bytes": c.peak_activation_bytes, "memory_bytes": c.memory_bytes,
            "params": p.params, "macs": p.macs, "budget": {"latency_ms": budget.latency_ms,
                                                           "memory_bytes": budget.memory_bytes}}
    if warning:
        best["table_warning"] = warning
    run.write_json("best.json", best)
    score = "valid_accuracy" if accuracy else f"{cfg.estimator}_score"
    pareto = pareto_record(history, c, budget, score)
    run.write_json("pareto.json", pareto)
    if not run.writer:
        return
    pareto_plot(history, c, budget, run.path / "pareto.png",
                "validation accuracy (short training)" if accuracy else f"{cfg.estimator} score")
    feasible = [h for h in history if h.feasible]
    lines = [f"# hwnas search: {cfg.strategy} on {model.table.fingerprint.get('device')}", ""]
    if warning:
        lines += [f"**Warning: {warning}**", ""]
    lines += [f"- table: `{cfg.table}` ({model.space.id}@{model.space.resolution})",
              f"- budget: {budget.describe()}",
              f"- estimator: {cfg.estimator} on `{cfg.data}` (scores on valid); {result.evaluations} evaluations "
              f"({result.reused} reused from an earlier run), {len(history) - len(feasible)} proposals over budget",
              f"- best: `{result.arch}` (id {result.arch.id})",
              (f"  - priced at {c.usage:.0%} of the budget" + (f" (a binding budget is used from {BAND:.0%})"
                                                               if c.usage < BAND else "")) if binding else
              "  - the budget does not bind: the space's largest net fits it",
              *[f"  - {note}" for note in result.notes],
              f"  - predicted latency {c.latency_ms:.3f} ms, memory {c.memory_bytes / MB:.2f} MB "
              f"(weights {c.weight_bytes / MB:.2f} + peak activations {c.peak_activation_bytes / MB:.2f}, "
              "as the runtime plans them)",
              f"  - {p.params / 1e6:.3f} M params, {p.macs / 1e6:.1f} M MACs",
              f"  - after {cfg.final_epochs} epochs from scratch on train ({splits.get('train')} images): "
              f"**test accuracy {result.test_accuracy:.4f}** on test ({splits.get('test')} images, "
              f"{result.data.get('test_split')}; no search decision saw it); validation accuracy "
              f"{result.valid_accuracy:.4f} on valid ({splits.get('valid')} images, the split every search "
              "decision saw)",
              f"  - data `{cfg.data}`: augmentation {result.data.get('augment')}, normalized by the mean/std of "
              "a training sample (final.json)",
              f"- the trade-off it saw: `pareto.json`, {len(pareto['front'])} non-dominated candidates (score on "
              "valid, predicted latency, memory)",
              "", "![pareto](pareto.png)", ""]
    run.write_text("summary.md", "\n".join(lines))


