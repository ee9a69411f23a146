"""Search spaces (registered by name), architectures (JSON <-> module <-> human form)."""

from hwnas.spaces.base import Architecture, ArchNet, SearchableLayer, SearchSpace, Stage
from hwnas.spaces.registry import get_space, register_space, space_info, space_names

__all__ = [
    "ArchNet", "Architecture", "SearchSpace", "SearchableLayer", "Stage",
    "get_space", "register_space", "space_info", "space_names",
]
