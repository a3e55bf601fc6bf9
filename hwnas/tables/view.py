"""Read-side views of a table: summary, layer x candidate matrix and heatmap, and a diff of two tables.

A model table (``hwnas profile --model``, :mod:`hwnas.foreign.modelcost`) has a summary and a diff but no search space:
:func:`space_of` refuses it with a message that says how such a table is used."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hwnas.core.errors import TableError
from hwnas.spaces import SearchSpace, get_space
from hwnas.tables.table import Table, is_model_table


def space_of(table: Table) -> SearchSpace:
    """The search space a table was profiled for; a model table has none (it prices its one model)."""
    if is_model_table(table):
        model, device = table.space.get("model", "its model"), table.fingerprint.get("device", "cpu")
        raise TableError(f"this table is a model table (the blocks of {model}, measured on {device}), not a "
                         "search space's: it prices that one ONNX model, not architectures.",
                         f"price that model with: hwnas check {model} --device {device} --predict --table TABLE")
    s = table.space
    return get_space(s["name"], int(s["resolution"]), float(s.get("width", 1.0)))


def summary(table: Table) -> dict:
    """Counts, total and spread figures of a table (what ``hwnas table show`` prints)."""
    measured = {k: e for k, e in table.entries.items() if e.latency is not None}
    spreads = np.array([e.latency.spread for e in measured.values()]) if measured else np.array([1.0])
    medians = np.array([e.latency.median for e in measured.values()]) if measured else np.array([0.0])
    return {
        "device": table.fingerprint.get("device"), "runtime": table.fingerprint.get("runtime"),
        "runtime_version": table.fingerprint.get("runtime_version"), "host_cpu": table.fingerprint.get("host_cpu"),
        "precision": table.fingerprint.get("precision"), "threads": table.fingerprint.get("threads"),
        "space": table.space.get("id"), "resolution": table.space.get("resolution"), "created": table.created,
        "entries": len(table.entries), "measured": len(measured), "free": len(table.entries) - len(measured),
        "statistic": table.statistic, "overhead_ms": table.overhead_ms, "median_ms_min": float(medians.min()),
        "median_ms_max": float(medians.max()), "spread_median": float(np.median(spreads)),
        "spread_p90": float(np.percentile(spreads, 90)), "spread_max": float(spreads.max()),
        "flagged": sorted(k for k, e in table.entries.items() if "unstable" in e.flags),
        "remeasured": sum("remeasured" in e.flags for e in table.entries.values()),
        **({k: table.space.get(k) for k in ("model", "blocks", "unique_blocks")} if is_model_table(table) else {}),
    }


def layer_matrix(table: Table, space: SearchSpace) -> tuple[list[str], list[str], np.ndarray]:
    """Latency (ms, the table's statistic) per searchable layer x candidate slot; NaN where a layer lacks that slot."""
    layers = space.searchable
    cols = max(layers, key=lambda layer: len(layer.candidates)).choice_names
    grid = np.full((len(layers), len(cols)), np.nan)
    for i, layer in enumerate(layers):
        for name, key in zip(layer.choice_names, layer.candidates):
            grid[i, cols.index(name)] = table.latency_ms(str(key))
    return [layer.name for layer in layers], list(cols), grid


def plot_heatmap(table: Table, path: Path) -> Path:
    """Write a layer x candidate heatmap of median latency to ``path`` (PNG)."""
    from hwnas.core.plotting import save_png, subplots

    if is_model_table(table):
        raise TableError(f"a model table (the blocks of {table.space.get('model')}) has no layer x candidate grid "
                         "to plot.", "drop --plot; hwnas table show --entries lists its blocks")
    rows, cols, grid = layer_matrix(table, space_of(table))
    fig, ax = subplots(figsize=(1.0 + 0.8 * len(cols), 1.0 + 0.32 * len(rows)))
    im = ax.imshow(grid, aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    for (i, j), v in np.ndenumerate(grid):
        if not np.isnan(v):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6,
                    color="white" if v < np.nanmax(grid) * 0.6 else "black")
    fig.colorbar(im, ax=ax, label="median latency (ms)")
    # the table's own strings, shown as written: a '$' in them is not matplotlib's math markup
    ax.set_title(f"{table.file_stem}: {table.fingerprint.get('runtime')} {table.fingerprint.get('runtime_version')}",
                 parse_math=False)
    return save_png(fig, path)


@dataclass
class TableDiff:
    """B relative to A, per key present in both (ratio = B median / A median)."""

    ratios: dict[str, float]
    only_a: list[str]
    only_b: list[str]
    context: dict[str, tuple]  # fingerprint/settings fields that differ: (a, b)

    @property
    def median_ratio(self) -> float:
        return float(np.median(list(self.ratios.values()))) if self.ratios else float("nan")

    @property
    def slower(self) -> list[str]:
        """The keys B runs slower than A, slowest first: where an INT8 table loses to its fp32 one."""
        return sorted((k for k, r in self.ratios.items() if r > 1.0), key=lambda k: -self.ratios[k])


def diff(a: Table, b: Table) -> TableDiff:
    if a.space.get("id") != b.space.get("id") or a.space.get("resolution") != b.space.get("resolution"):
        raise TableError(f"tables are for different spaces ({a.space.get('id')}@{a.space.get('resolution')} vs "
                         f"{b.space.get('id')}@{b.space.get('resolution')}).", "diff tables of the same space setting")
    if a.statistic != b.statistic:
        raise TableError(f"the tables read their latencies as different statistics ({a.statistic} vs {b.statistic}).",
                         "read both as one: hwnas table diff A B --statistic median (or min)")
    ratios = {k: b.latency_ms(k) / a.latency_ms(k) for k in a.entries
              if k in b.entries and a.entries[k].latency and b.entries[k].latency and a.latency_ms(k) > 0}
    context = {f: (a.fingerprint.get(f), b.fingerprint.get(f)) for f in sorted(set(a.fingerprint) | set(b.fingerprint))
               if f != "descriptor" and a.fingerprint.get(f) != b.fingerprint.get(f)}
    return TableDiff(ratios=ratios, only_a=sorted(set(a.entries) - set(b.entries)),
                     only_b=sorted(set(b.entries) - set(a.entries)), context=context)
