"""Options several commands share, declared once (typer's ``Annotated`` form); each command sets the default."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hwnas.tables.table import FOREIGN_FLAG

Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
AllowForeignTable = Annotated[bool, typer.Option(
    FOREIGN_FLAG, help="Use a table measured on another host or runtime anyway (the output, the report and the "
                       "JSON say so).")]
TablesDir = Annotated[Path, typer.Option("--tables", help="Folder of tables (where a device's table is looked up).")]
BudgetFile = Annotated[Path, typer.Option("--budget", "-b", help="Budgets file (TOML, see tools/ci/budgets.toml).")]
