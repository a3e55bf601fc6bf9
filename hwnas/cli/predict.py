from __future__ import annotations

import json
from pathlib import Path

import typer

from hwnas.cli._console import console


def predict(
    arch: str = typer.Argument(..., help="Architecture string, e.g. proxyless@224:111111111111111111111, "
                                         "or 'reference' for the space's reference net."),
    table: Path = typer.Option(..., "--table", "-t", help="Lookup table of the device."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Predict latency, memory, parameters and MACs of one architecture from a table."""
    from hwnas.cost.model import CostModel
    from hwnas.spaces.arch import Arch
    from hwnas.tables.table import Table

    model = CostModel(Table.load(table))
    a = Arch.of(model.space, model.space.reference_choices()) if arch == "reference" else Arch.parse(arch)
    p = model.predict(a)
    out = {"arch": str(a), "id": a.id, "device": model.table.fingerprint.get("device"), "latency_ms": p.latency_ms,
           "weight_bytes": p.weight_bytes, "peak_activation_bytes": p.peak_activation_bytes,
           "planned_activation_bytes": p.planned_activation_bytes,
           "memory_bytes": p.memory_bytes, "params": p.params, "macs": p.macs}
    if as_json:
        console.print_json(json.dumps(out))
        return
    console.print(f"{a}  (id {a.id}) on {out['device']}\n"
                  f"  latency      {p.latency_ms:.3f} ms\n"
                  f"  weights      {p.weight_bytes / 2**20:.2f} MiB\n"
                  f"  activations  {p.planned_activation_bytes / 2**20:.2f} MiB as the runtime plans them "
                  f"({p.peak_activation_bytes / 2**20:.2f} MiB by liveness)\n"
                  f"  memory       {p.memory_bytes / 2**20:.2f} MiB total\n"
                  f"  params       {p.params / 1e6:.3f} M\n"
                  f"  MACs         {p.macs / 1e6:.1f} M")
