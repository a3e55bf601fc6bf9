"""Search spaces: op enumeration and module building."""

from __future__ import annotations

from hwnas.core.registry import Registry, unknown_name
from hwnas.spaces.base import FREE_OPS, Layer, SearchSpace
from hwnas.spaces.fbnet import FBNetSpace
from hwnas.spaces.keys import OpKey
from hwnas.spaces.proxyless import ProxylessSpace

SPACES: Registry[type[SearchSpace]] = Registry("search space")
SPACES.register("proxyless")(ProxylessSpace)
SPACES.register("fbnet")(FBNetSpace)


def get_space(name: str, resolution: int | None = None, width: float = 1.0) -> SearchSpace:
    """A space setting by name; ``resolution`` defaults to the space's first (224 for proxyless)."""
    cls = SPACES.get(name)
    return cls(resolution if resolution is not None else cls.resolutions[0], width)


def space_from_id(space_id: str, resolution: int) -> SearchSpace:
    """Inverse of ``SearchSpace.id``: ``proxyless`` or ``proxyless-w0.75`` at a resolution."""
    name, _, width = space_id.partition("-w")
    try:
        return get_space(name, resolution, float(width) if width else 1.0)
    except ValueError:
        raise unknown_name("search space", space_id, SPACES.list()) from None


__all__ = ["FREE_OPS", "SPACES", "Layer", "OpKey", "SearchSpace", "get_space", "space_from_id"]
