from __future__ import annotations

import json

import typer
from rich.markup import escape
from rich.table import Table as RichTable

from hwnas.backends import get_backend_class
from hwnas.cli._console import console
from hwnas.devices import get_device, list_devices


def devices(
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """List the registered devices: backend, precision, threads and whether each is ready here."""
    rows = []
    for name in list_devices():
        dev = get_device(name)
        ok, why = dev.availability()
        verified = get_backend_class(dev.backend).verified
        rows.append({"name": dev.name, "backend": dev.backend, "verified": verified, "precision": dev.precision,
                     "threads": dev.threads, "ready": ok, "status": why, "description": dev.description,
                     "file": dev.source})
    if as_json:
        console.print_json(json.dumps(rows))
        return
    table = RichTable("device", "backend", "precision", "threads", "status", title="hwnas devices")
    for r in rows:
        status = "[green]ready[/]" if r["ready"] else f"[yellow]not ready:[/] {escape(r['status'])}"
        backend = r["backend"] if r["verified"] else f"{r['backend']} (unverified)"
        table.add_row(r["name"], backend, r["precision"], str(r["threads"]), status)
    console.print(table)
