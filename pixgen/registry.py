"""Name -> object registries, filled by decorators (DESIGN.md, house style 4)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pixgen.errors import ConfigError, did_you_mean

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    obj: T
    help: str


class Registry(Generic[T]):
    """A named collection of classes or factories.

    Args:
        kind: what is registered ("model", "dataset"), used in error messages.
        list_command: the CLI command that lists the entries, named in errors.
    """

    def __init__(self, kind: str, *, list_command: str) -> None:
        self.kind = kind
        self.list_command = list_command
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, *, help: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name`` with a one-line description."""

        def wrap(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = Entry(name, obj, help)
            if isinstance(obj, type):
                obj.registered_name = name  # type: ignore[attr-defined]
            return obj

        return wrap

    def get(self, name: str) -> T:
        """Look ``name`` up; an unknown name raises a ConfigError listing the valid ones."""
        _ensure_builtins_loaded()
        try:
            return self._entries[name].obj
        except KeyError:
            valid = ", ".join(sorted(self._entries))
            raise ConfigError(
                f"unknown {self.kind} {name!r}{did_you_mean(name, self._entries)}; "
                f"valid {self.kind}s: {valid} (see `pixgen {self.list_command}`)"
            ) from None

    def entries(self) -> list[Entry[T]]:
        _ensure_builtins_loaded()
        return [self._entries[k] for k in sorted(self._entries)]

    def names(self) -> list[str]:
        return [e.name for e in self.entries()]

    def __contains__(self, name: object) -> bool:
        _ensure_builtins_loaded()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


MODELS: Registry[Any] = Registry("model", list_command="models")
DATASETS: Registry[Any] = Registry("dataset", list_command="datasets")
FEATURES: Registry[Any] = Registry("feature extractor", list_command="eval --help")

_loaded = False


def _ensure_builtins_loaded() -> None:
    """Import the built-in model and dataset modules so their decorators have run."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    import pixgen.data  # noqa: F401
    import pixgen.eval.features  # noqa: F401
    import pixgen.models  # noqa: F401
