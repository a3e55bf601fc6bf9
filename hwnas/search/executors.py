"""Where candidate evaluations run: in this process (default), or as Ray tasks on a cluster.

Both take the estimator (a small picklable object) and architecture strings, and return scores in order,
so a search gives the same result on either for the same seed.
"""

from __future__ import annotations

from hwnas._lazy import require
from hwnas.arch import Arch
from hwnas.errors import ConfigError


def _score(estimator, arch: str) -> float:
    import torch

    torch.set_num_threads(1)  # one evaluation per worker core; the result does not depend on the thread count
    return float(estimator.score(Arch.parse(arch)))


class Executor:
    name = "local"

    def map(self, estimator, archs: list[str]) -> list[float]:
        return [float(estimator.score(Arch.parse(a))) for a in archs]

    def close(self) -> None:
        return None

    def describe(self) -> dict:
        return {"executor": self.name}


class RayExecutor(Executor):
    """Each evaluation is one Ray task; ``address`` joins an existing cluster (``auto`` or ``ray://host:port``),
    None starts a local one."""

    name = "ray"

    def __init__(self, address: str | None = None, cpus_per_task: float = 1.0) -> None:
        self.ray = require("ray", "ray", "ray")
        self.address = address
        if not self.ray.is_initialized():
            try:
                self.ray.init(address=address, ignore_reinit_error=True, log_to_driver=False,
                              include_dashboard=False)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                raise ConfigError(f"cannot connect to the Ray cluster at {address!r}: {exc}",
                                  "start it with `ray start --head`, or leave out --address for a local one") from None
        self._task = self.ray.remote(num_cpus=cpus_per_task)(_score)

    def map(self, estimator, archs: list[str]) -> list[float]:
        ref = self.ray.put(estimator)
        return [float(v) for v in self.ray.get([self._task.remote(ref, a) for a in archs])]

    def describe(self) -> dict:
        return {"executor": self.name, "address": self.address}


def make_executor(name: str, address: str | None = None) -> Executor:
    if name == "local":
        if address:
            raise ConfigError("--address needs --executor ray.", "add --executor ray, or drop --address")
        return Executor()
    if name == "ray":
        return RayExecutor(address)
    raise ConfigError(f"unknown executor '{name}'.", "use local or ray")
