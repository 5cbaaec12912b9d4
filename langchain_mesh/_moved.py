"""Old module paths, kept working after modules moved into subpackages.

``langchain_mesh.connections.openai_wire`` now lives at ``langchain_mesh.connections.openai.wire``,
``knowledge_banks.faiss_store`` at ``knowledge_banks.backends.faiss.store``, and so on. A package
registers its table of moves with :func:`register`; importing an old path then gives the very module
at the new path (the same object: its private names, and a monkeypatch of either name, are shared).
Why a finder and not a one-line module at each old path: a file there would hold the old path in
git, so edits made elsewhere to the old file would not follow the move when branches merge.

    register("langchain_mesh.connections", {"openai_wire": "openai.wire", "http1": "transport.http1"})
"""

from __future__ import annotations

import importlib
import sys
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any, Mapping, Optional

__all__ = ["register"]


class _MovedModules:
    """A meta path finder and loader for old module names. It goes first: another finder (an editable
    install of an older checkout, say) could otherwise serve a stale module under an old name."""

    def __init__(self) -> None:
        self.moves: dict[str, str] = {}
        self._specs: dict[str, Optional[ModuleSpec]] = {}  # old name -> the module's own spec, while loading

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Optional[ModuleSpec]:
        if fullname not in self.moves:
            return None
        return ModuleSpec(fullname, self)

    def create_module(self, spec: ModuleSpec) -> ModuleType:
        module = importlib.import_module(self.moves[spec.name])
        self._specs[spec.name] = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # the import system stamped the old name's spec on the module: give it back its own
        own = self._specs.pop(module.__spec__.name, None) if module.__spec__ is not None else None
        if own is not None:
            module.__spec__ = own


_FINDER = _MovedModules()


def register(package: str, moves: Mapping[str, str]) -> None:
    """``package.<old>`` imports as ``package.<new>``, for each ``old: new`` of ``moves``."""
    _FINDER.moves.update({f"{package}.{old}": f"{package}.{new}" for old, new in moves.items()})
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
