from collections.abc import ValuesView

class ConfigSnapshot(dict[str, bytes]):
    """`view.snapshot()`: every key and value, and the etcd revision they reflect (read at once)."""

    revision: int
    def __init__(self, values: dict[str, bytes], revision: int) -> None: ...
    def values(self) -> ValuesView[bytes]: ...
