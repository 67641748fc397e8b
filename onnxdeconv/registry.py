"""Per-op tables: one entry per ONNX op type, registered by decorator, filled on first lookup.

Three tables use it: the transpose rules (:data:`onnxdeconv.deconv.rules.TRANSPOSE_RULES`), the
linearisers of ``check``'s adjoint test (:data:`onnxdeconv.check.linearise.LINEARISERS`) and the
receptive-field rules (:data:`onnxdeconv.graph.receptive_field.field.FIELD_RULES`). Each family
of ops lives in its own module of the table's package and registers itself with
:meth:`OpRegistry.register`. The table imports those modules the first time it is read, so the
package needs no import at its bottom (an import cycle) to be complete.
"""

from __future__ import annotations

import importlib
import pkgutil
import threading
from collections.abc import Callable, Iterator, MutableMapping
from typing import Generic, TypeVar

T = TypeVar("T")


class DuplicateOpError(ValueError):
    """Two entries registered for the same op type in one table (a programming error)."""


class OpRegistry(MutableMapping[str, T], Generic[T]):
    """A table from op type to ``T``, filled by :meth:`register` in the modules of ``package``.

    Reading the table (``op in table``, ``table[op]``, ``table.get(op)``, iterating over it)
    first imports every module of ``package``, once. Item assignment and deletion replace an
    entry without the duplicate check: they exist for tests (``monkeypatch.setitem``).
    """

    def __init__(self, what: str, package: str | None = None) -> None:
        """Create an empty table.

        Args:
            what: What an entry is, for messages ("transpose rule").
            package: The package whose modules register the entries; None: nothing to import.
        """
        self.what = what
        self.package = package
        self._entries: dict[str, T] = {}
        self._discovered = package is None
        self._discovering = False
        self._lock = threading.RLock()

    def register(self, *op_types: str) -> Callable[[T], T]:
        """Decorator: register the decorated value for each of ``op_types``.

        Raises:
            DuplicateOpError: One of ``op_types`` already has an entry.
        """

        def add(entry: T) -> T:
            # All or nothing: a clash leaves the table as it was.
            for index, op_type in enumerate(op_types):
                if op_type in self._entries or op_type in op_types[:index]:
                    raise DuplicateOpError(f"two {self.what}s for {op_type}")
            self._entries.update(dict.fromkeys(op_types, entry))
            return entry

        return add

    def ops(self) -> list[str]:
        """The op types that have an entry, sorted."""
        return sorted(self._all())

    def _all(self) -> dict[str, T]:
        if not self._discovered:
            self._discover()
        return self._entries

    def _discover(self) -> None:
        # Importing each module runs its registrations. Another thread waits on the lock until
        # the table is complete; this thread may read the partial table while the modules load
        # (a module that looks an op up at import time), which must not import them again.
        with self._lock:
            if self._discovered or self._discovering:
                return
            assert self.package is not None
            self._discovering = True
            try:
                package = importlib.import_module(self.package)
                for module in pkgutil.iter_modules(package.__path__):
                    importlib.import_module(f"{self.package}.{module.name}")
                self._discovered = True
            finally:
                self._discovering = False

    def __getitem__(self, op_type: str) -> T:
        return self._all()[op_type]

    def __setitem__(self, op_type: str, entry: T) -> None:
        self._all()[op_type] = entry

    def __delitem__(self, op_type: str) -> None:
        del self._all()[op_type]

    def __contains__(self, op_type: object) -> bool:
        return op_type in self._all()

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._all()))

    def __len__(self) -> int:
        return len(self._all())

    def __repr__(self) -> str:
        return f"OpRegistry({self.what!r}, {len(self)} ops)"
