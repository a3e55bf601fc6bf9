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
TrainDevice = Annotated[str, typer.Option(
    "--train-device", help="Where networks train: auto (CUDA when there is a GPU), cpu, cuda or cuda:N. Latency is "
                           "still measured on --device.")]
Amp = Annotated[str, typer.Option("--amp", help="Mixed-precision training: auto (bf16 on CUDA, off on the CPU), "
                                                "bf16, fp16 (CUDA) or off.")]
Augment = Annotated[str, typer.Option(
    "--augment", help="Training augmentation: auto (flip-crop; crop for digits), flip-crop (pad-and-crop or "
                      "random-resized-crop, plus flip), crop, none.")]
Workers = Annotated[int, typer.Option("--workers", help="Data-loading processes (default: 0 on the CPU, a few "
                                                        "beside a GPU).", min=0)]
Compile = Annotated[bool, typer.Option("--compile", help="torch.compile the networks that train.")]
