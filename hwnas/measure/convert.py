"""Converting many modules for a runtime at once: worker processes fill the artifact cache, nothing is timed.

Conversion is the slow part of profiling and validating on LiteRT (seconds a block, more a net), and it needs
no quiet machine: ``jobs`` processes convert side by side, each rebuilding its modules from a small picklable
recipe (a module-level builder and its arguments) and writing them into the artifact cache
(:meth:`hwnas.devices.backends.base.Backend.prepare`), where the caller's own ``prepare`` then finds them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hwnas.core.errors import MeasurementError
from hwnas.devices.registry import Device


@dataclass(frozen=True)
class Recipe:
    """How a worker builds one module: ``build(*args)``, converted at ``input_shape`` under ``tag``."""

    build: Callable[..., Any]  # module-level, so that it pickles by name
    args: tuple
    input_shape: tuple[int, ...]
    tag: str


def op_module(space_name: str, resolution: int, width: float, key: str):
    """A search space's block for op key ``key`` (a :class:`Recipe` builder)."""
    from hwnas.spaces import get_space
    from hwnas.spaces.keys import OpKey

    return get_space(space_name, resolution, width).build_op(OpKey.parse(key))


def net_module(space_id: str, resolution: int, choices: tuple[int, ...]):
    """A whole network of a space (a :class:`Recipe` builder)."""
    from hwnas.spaces.arch import Arch

    return Arch(space_id, resolution, tuple(choices)).build()


def _convert(job: tuple[str, dict, Recipe]) -> str:
    from hwnas.devices.registry import load_device_file

    source, options, recipe = job
    device = load_device_file(Path(source)).with_options(**options)
    art = device.backend_instance().prepare(recipe.build(*recipe.args), recipe.input_shape, tag=recipe.tag)
    return str(art.path)


def convert_in_parallel(device: Device, recipes: list[Recipe], jobs: int, advance: Callable[[], None]) -> None:
    """Convert every recipe for ``device``'s runtime in ``jobs`` worker processes (spawned: no state of this
    process leaks in), advancing the progress bar per module done."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    work = [(device.source, dict(device.options), r) for r in recipes]
    try:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
            for _ in pool.map(_convert, work):
                advance()
    except BrokenProcessPool:  # a worker killed (out of memory, most often): what it had is not converted
        raise MeasurementError(f"a conversion worker died (of {jobs} running at once).",
                               "rerun with fewer --jobs (or --jobs 1), adding --resume") from None
