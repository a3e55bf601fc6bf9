"""Where candidate evaluations run: in this process (default), or as Ray tasks on a cluster.

Both take the estimator (a small picklable object) and architecture strings, and return scores in order,
so a search gives the same result on either for the same seed.
"""

from __future__ import annotations

import socket

from hwnas.core.errors import ConfigError, DeviceUnavailable
from hwnas.core.lazy import require
from hwnas.core.registry import Registry
from hwnas.spaces.arch import Arch

CONNECT_TIMEOUT_S = 5.0  # a cluster's head answers at once; Ray's own connect retries for a minute or more
_ADDRESS_FIX = "give --address auto, HOST:PORT (the head's GCS port, 6379) or ray://HOST:PORT (Ray client, 10001)"


def _score(estimator, arch: str) -> float:
    import torch

    torch.set_num_threads(1)  # one evaluation per worker core; the result does not depend on the thread count
    return float(estimator.score(Arch.parse(arch)))


class Executor:
    name = "local"

    @classmethod
    def create(cls, address: str | None = None) -> Executor:
        """The executor for a search's ``--address`` (checked first: :func:`check_address`)."""
        check_address(cls.name, address)
        return cls()

    def map(self, estimator, archs: list[str]) -> list[float]:
        return [float(estimator.score(Arch.parse(a))) for a in archs]

    def close(self) -> None:
        return None


class RayExecutor(Executor):
    """Each evaluation is one Ray task; ``address`` joins an existing cluster (``auto`` or ``ray://host:port``),
    None starts a local one."""

    name = "ray"

    @classmethod
    def create(cls, address: str | None = None) -> Executor:
        check_address(cls.name, address)
        return cls(address)

    def __init__(self, address: str | None = None, cpus_per_task: float = 1.0) -> None:
        probe(address)  # before Ray, which would wait on a dead address far longer than anyone does
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


def parse_address(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of a cluster address, None for ``auto`` (Ray finds the cluster it started here)."""
    text = address.strip()
    if text == "auto":
        return None
    rest = text.removeprefix("ray://")
    host, sep, port = rest.rpartition(":")
    host = host.strip("[]")  # [::1]:6379
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535 or "/" in rest:
        raise ConfigError(f"--address {address!r} is not a Ray cluster address.", _ADDRESS_FIX)
    return host, int(port)


def check_address(executor: str, address: str | None) -> None:
    """The executor's address is well formed (no connection is made)."""
    if address is None:
        return
    if executor != "ray":
        raise ConfigError("--address needs --executor ray.", "add --executor ray, or drop --address")
    parse_address(address)


def probe(address: str | None, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Refuse, within ``timeout`` seconds, a cluster address where nothing listens."""
    target = parse_address(address) if address is not None else None
    if target is None:
        return
    try:
        with socket.create_connection(target, timeout=timeout):
            pass
    except OSError as exc:
        why = f"no answer within {timeout:g} s" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise DeviceUnavailable(f"no Ray cluster answers at {address} ({why.lower()}).",
                                "start one there with `ray start --head`, check the host and port, or leave out "
                                "--address to run a local cluster") from None


EXECUTORS: Registry[type[Executor]] = Registry("executor")
EXECUTORS.register(Executor.name)(Executor)
EXECUTORS.register(RayExecutor.name)(RayExecutor)


def make_executor(name: str, address: str | None = None) -> Executor:
    return EXECUTORS.get(name).create(address)
