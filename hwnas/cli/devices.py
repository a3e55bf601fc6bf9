from __future__ import annotations

import json

import typer
from rich.markup import escape
from rich.table import Table as RichTable

from hwnas.cli._console import console
from hwnas.core.errors import HwnasError
from hwnas.devices.backends import get_backend_class
from hwnas.devices.registry import descriptor_file, get_device, list_devices


def devices(
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """List the registered devices: backend, precision, threads and whether each is ready here."""
    rows = []
    for name in list_devices():
        try:
            dev = get_device(name)
        except HwnasError as exc:  # one bad descriptor in a folder is listed, not fatal to the others
            rows.append({"name": name, "backend": "", "verified": True, "precision": "", "threads": 0, "ready": False,
                         "broken": True, "status": f"broken descriptor: {exc.message}", "fix": exc.hint,
                         "description": "", "file": str(descriptor_file(name))})
            continue
        ok, why = dev.availability()
        verified = get_backend_class(dev.backend).verified
        rows.append({"name": dev.name, "backend": dev.backend, "verified": verified, "precision": dev.precision,
                     "threads": dev.threads, "ready": ok, "broken": False, "status": why,
                     "description": dev.description, "file": dev.source})
    if as_json:
        console.print_json(json.dumps(rows))
        return
    table = RichTable("device", "backend", "precision", "threads", "status", title="hwnas devices")
    for r in rows:
        status = ("[green]ready[/]" if r["ready"] else f"[red]{escape(r['status'])}[/]" if r["broken"]
                  else f"[yellow]not ready:[/] {escape(r['status'])}")
        backend = r["backend"] if r["verified"] else f"{r['backend']} (unverified)"
        table.add_row(escape(r["name"]), backend, r["precision"], str(r["threads"] or ""), status)
    console.print(table)
