"""The pipeline's final report, as Markdown and as a self-contained-folder HTML page, from the steps' records."""

from __future__ import annotations

import html
import json
from pathlib import Path

from hwnas.core.atomic import atomic_write_text
from hwnas.deploy.budgets import Limits


def _sections(out: Path, done: dict, limits: Limits) -> list[tuple[str, list[str], str | None]]:
    """(title, bullet lines, image path relative to ``out`` or None) per section."""
    from hwnas.tables.table import Table
    from hwnas.tables.view import plot_heatmap

    table = Table.load(out / "table.json")
    plot_heatmap(table, out / "heatmap.png")
    t = done["table"]
    fp = table.fingerprint
    sections = [("Device and table", [
        f"device `{fp.get('device')}`: {fp.get('runtime')} {fp.get('runtime_version')}, {fp.get('precision')}, "
        f"{fp.get('threads')} thread(s), host `{fp.get('host_cpu')}`",
        f"table `{table.space.get('id')}@{table.space.get('resolution')}`, {len(table.entries)} entries, "
        + ("profiled in this run" if t["profiled"] else f"measured on this device earlier (`{t['from']}`)")],
        "heatmap.png")]
    cal = done.get("calibrate", {})
    if not cal.get("skipped"):
        sections.append(("Calibration on this host now", [
            f"held-out nets within ±10% after calibration: {cal['heldout_within_10pct']:.0%} "
            f"(MAPE {cal['heldout_mape']:.1%})"], "calibration.png"))
    s = done["search"]
    sections.append(("Search", [
        f"budget: {limits.describe()}",
        f"best `{s['arch']}`: predicted {s['predicted_ms']:.3f} ms",
        f"test accuracy {s['test_accuracy']:.4f} on the test split ({s['splits'].get('test')} images, "
        f"{s['test_split']}): no search decision saw it",
        f"validation accuracy {s['valid_accuracy']:.4f} on the validation split ({s['splits'].get('valid')} images): "
        "every candidate score and the choice of the answer came from it; weights learned on "
        f"{s['splits'].get('train')} training images",
        "details: `search/summary.md`, every candidate in `search/candidates.jsonl`"], "search/pareto.png"))
    e = done["export"]
    parity = e.get("parity") or {}
    if e.get("precision") == "int8":
        export_line = (f"`{Path(e['model']).name}`, quantized to INT8 with the device's scheme from training "
                       f"images; top-1 agreement with PyTorch on them {parity.get('top1_agreement', float('nan')):.1%}")
    else:
        export_line = (f"`{Path(e['model']).name}`; parity with PyTorch at export: max |Δ| "
                       f"{parity.get('max_abs_error', float('nan')):.2e}, {'pass' if parity.get('passed') else 'FAIL'}")
    sections.append(("Export", [export_line], None))
    v = json.loads((out / "verify" / "verify.json").read_text())
    lines = [f"**{'PASS' if v['passed'] else 'FAIL'}**",
             f"measured {v['measured_ms']:.4f} ms ({v['statistic']} of {v['latency']['n']} runs)"]
    if v.get("predicted"):
        lines.append(f"predicted {v['predicted']['latency_ms']:.4f} ms: measured is "
                     f"{v['predicted']['latency_error']:+.1%}")
    for kind in ("random", "real"):
        if kind in v["parity"]:
            p = v["parity"][kind]
            where = "random inputs" if kind == "random" else f"real {p.get('split', 'test')}-split images"
            lines.append(f"parity on {where}: {'pass' if p['passed'] else 'FAIL'} "
                         f"(max |Δ| {p['max_abs_error']:.2e}, top-1 agreement {p['top1_agreement']:.1%})")
            if "accuracy_drop" in p:
                lines.append(f"INT8 accuracy on {p['images']} test images {p['accuracy']:.4f} against fp32 "
                             f"{p['reference_accuracy']:.4f}: {p['accuracy_drop'] * 100:.2f} points lost (at most "
                             f"{p['max_accuracy_drop'] * 100:g})")
    if "activation_bytes" in v["memory"]:
        lines.append(f"memory {v['memory']['measured_total_bytes'] / 1e6:.2f} MB "
                     f"(weights {v['memory']['weight_bytes'] / 1e6:.2f} + activations "
                     f"{v['memory']['activation_bytes'] / 1e6:.2f})")
    for name, c in v["budget"].get("checks", {}).items():
        lines.append(f"budget {name}: {'pass' if c['passed'] else 'FAIL'}")
    sections.append(("Verification on the device", lines, "verify/latency.png"))
    r = done.get("reference", {})
    if r.get("reason"):
        sections.append(("Beside the hand-made network", [f"skipped: {r['reason']}"], None))
    elif r and not r.get("skipped"):
        sections.append(("Beside the hand-made network", _beside(s, v, r), None))
    return sections


def _beside(s: dict, v: dict, r: dict) -> list[str]:
    """The searched net and the hand-scaled reference at the same budget: accuracy, measured latency, memory."""
    def figures(acc: float, ms: float, mem: float | None) -> str:
        return (f"test accuracy {acc:.4f}, measured {ms:.4f} ms"
                + (f", memory {mem / 1e6:.2f} MB" if mem else ""))

    mem = v["memory"].get("measured_total_bytes")
    lines = [f"searched `{s['arch']}`: " + figures(s["test_accuracy"], v["measured_ms"], mem),
             f"hand-scaled reference `{r['arch']}`: " + figures(r["test_accuracy"], r["measured_ms"],
                                                                r.get("memory_bytes")),
             *[note for note in r.get("notes", []) if note.startswith("hand-scaled")],
             f"the search's answer: **{(s['test_accuracy'] - r['test_accuracy']) * 100:+.2f} points** of test "
             f"accuracy at {v['measured_ms'] / r['measured_ms']:.2f}× the reference's measured latency; both "
             "trained with the same schedule on the same splits (`reference/` holds its run, model and verification)"]
    return lines


def write_pipeline_report(out: Path, done: dict, limits: Limits) -> Path:
    """``report.md`` and ``report.html`` in ``out`` (images beside them); returns the Markdown path."""
    sections = _sections(out, done, limits)
    md = ["# hwnas pipeline report", ""]
    page = ["<!doctype html><html><head><meta charset='utf-8'><title>hwnas pipeline report</title>",
            "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}img{max-width:100%}</style>",
            "</head><body><h1>hwnas pipeline report</h1>"]
    for title, lines, image in sections:
        md += [f"## {title}", "", *[f"- {line}" for line in lines], ""]
        page += [f"<h2>{html.escape(title)}</h2><ul>",
                 *[f"<li>{_inline(line)}</li>" for line in lines], "</ul>"]
        if image and (out / image).exists():
            md += [f"![{title}]({image})", ""]
            page.append(f"<img src='{html.escape(image)}' alt='{html.escape(title)}'>")
    page.append("</body></html>")
    atomic_write_text(out / "report.html", "\n".join(page) + "\n")
    atomic_write_text(out / "report.md", "\n".join(md))
    return out / "report.md"


def _inline(text: str) -> str:
    """Markdown's `code` and **bold** as HTML; everything else escaped."""
    parts = html.escape(text).split("`")
    text = "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
    parts = text.split("**")
    return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))
