"""A round's accepted updates, with the set of their domains kept as the list changes.

Round readiness and the duplicate check ask "which domains are in?" after every decision: building that
set from the list each time cost O(pending) per update, so O(domains^2) per round (2-4% of governance's
time at 1,000 domains in ``bench/scale.py``, growing with the square). ``PendingList`` is a ``list``
whose every mutator also updates a count per domain, so ``domains`` is a live, read-only view at O(1).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, KeysView
from typing import Any, Protocol, SupportsIndex, TypeVar, overload


class _HasDomain(Protocol):
    @property
    def domain(self) -> str: ...


T = TypeVar("T", bound=_HasDomain)


class PendingList(list[T]):
    """A list of updates (anything with a ``domain``) that knows its domains without scanning itself."""

    def __init__(self, items: Iterable[T] = ()) -> None:
        super().__init__(items)
        self._counts: Counter[str] = Counter(item.domain for item in self)

    @property
    def domains(self) -> KeysView[str]:
        """The domains with at least one update in the list (a live view: do not keep it across changes)."""
        return self._counts.keys()

    def _gone(self, items: Iterable[T]) -> None:
        for item in items:
            self._counts[item.domain] -= 1
            if self._counts[item.domain] <= 0:
                del self._counts[item.domain]

    def _came(self, items: Iterable[T]) -> None:
        self._counts.update(item.domain for item in items)

    def append(self, item: T) -> None:
        super().append(item)
        self._counts[item.domain] += 1

    def extend(self, items: Iterable[T]) -> None:
        items = list(items)
        super().extend(items)
        self._came(items)

    def __iadd__(self, items: Iterable[T]) -> PendingList[T]:  # type: ignore[override]
        self.extend(items)
        return self

    def insert(self, index: SupportsIndex, item: T) -> None:
        super().insert(index, item)
        self._counts[item.domain] += 1

    def remove(self, item: T) -> None:
        super().remove(item)
        self._gone([item])

    def pop(self, index: SupportsIndex = -1) -> T:
        item = super().pop(index)
        self._gone([item])
        return item

    def clear(self) -> None:
        super().clear()
        self._counts.clear()

    @overload
    def __setitem__(self, index: SupportsIndex, value: T) -> None: ...
    @overload
    def __setitem__(self, index: slice, value: Iterable[T]) -> None: ...
    def __setitem__(self, index: Any, value: Any) -> None:
        if isinstance(index, slice):
            value = list(value)
            old = self[index]
            super().__setitem__(index, value)
            self._gone(old)
            self._came(value)
            return
        old_item = self[index]
        super().__setitem__(index, value)
        self._gone([old_item])
        self._came([value])

    def __delitem__(self, index: SupportsIndex | slice) -> None:
        old = self[index] if isinstance(index, slice) else [self[index]]
        super().__delitem__(index)
        self._gone(old)

    def __imul__(self, n: SupportsIndex) -> PendingList[T]:  # type: ignore[override]
        raise TypeError("a round's pending updates are not repeated")

    def sort(self, *args: Any, **kwargs: Any) -> None:
        super().sort(*args, **kwargs)  # same items: the counts stand

    def __reduce__(self) -> Any:
        return (PendingList, (list(self),))
