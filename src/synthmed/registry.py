"""One small generic registry; every pluggable thing (model, loss, augmentation ...) lives in one.

Adding a model is one decorated class plus a config entry::

    @MODELS.register("sngan")
    class SNGAN(...): ...

``synthmed list`` prints every registry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from synthmed.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named mapping from strings to classes or functions.

    Args:
        kind: what the registry holds, used in messages ("model", "loss" ...).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._help: dict[str, str] = {}

    def register(self, name: str, help: str | None = None) -> Callable[[T], T]:
        """Decorator that registers ``obj`` under ``name`` (names are unique)."""

        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            doc = help if help is not None else (getattr(obj, "__doc__", None) or "")
            self._help[name] = doc.strip().splitlines()[0] if doc.strip() else ""
            return obj

        return deco

    def get(self, name: str) -> T:
        """Return the entry called ``name`` or raise a ConfigError listing the choices."""
        try:
            return self._items[name]
        except KeyError:
            choices = ", ".join(sorted(self._items)) or "(none)"
            raise ConfigError(f"unknown {self.kind} {name!r}; expected one of: {choices}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def describe(self, name: str) -> str:
        return self._help.get(name, "")

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)

    def items(self) -> list[tuple[str, Any]]:
        return [(k, self._items[k]) for k in self.names()]


#: Generative model families (networks + how they are built).
MODELS: Registry[Any] = Registry("model")
#: Adversarial and reconstruction losses.
LOSSES: Registry[Any] = Registry("loss")
#: Differentiable augmentations applied to discriminator inputs.
AUGMENTS: Registry[Any] = Registry("augmentation")
#: Input readers for ``synthmed preprocess``.
READERS: Registry[Any] = Registry("reader")
#: Metrics on feature vectors or images (``synthmed.metrics``).
METRICS: Registry[Any] = Registry("metric")
#: Downstream diagnosis classifiers of ``synthmed utility`` (``synthmed.utility.classifiers``).
CLASSIFIERS: Registry[Any] = Registry("classifier")


def all_registries() -> dict[str, Registry[Any]]:
    """Every registry, after importing the modules that fill them."""
    import synthmed.augment  # noqa: F401
    import synthmed.data  # noqa: F401
    import synthmed.losses  # noqa: F401
    import synthmed.metrics  # noqa: F401
    import synthmed.models  # noqa: F401
    import synthmed.utility.classifiers  # noqa: F401
    from synthmed.features.base import EXTRACTORS

    return {"models": MODELS, "losses": LOSSES, "augmentations": AUGMENTS, "readers": READERS,
            "extractors": EXTRACTORS, "metrics": METRICS, "classifiers": CLASSIFIERS}
