"""`ConfigView.snapshot()`'s result type (a `dict` subclass: abi3 extension classes cannot
subclass `dict`, so this one small class is Python; the view itself is native)."""

from __future__ import annotations


class ConfigSnapshot(dict[str, bytes]):
    """Every key and value of a config view, and the etcd ``revision`` they reflect, read
    together: no change can fall between the values and the revision."""

    __slots__ = ("revision",)

    def __init__(self, values: dict[str, bytes], revision: int) -> None:
        super().__init__(values)
        self.revision: int = revision

    def __repr__(self) -> str:
        return f"ConfigSnapshot(revision={self.revision}, keys={len(self)})"
