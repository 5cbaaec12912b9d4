"""The OpenAI-compatible HTTP API over a mesh (``mesh serve``): see :class:`~.app.MeshApp`.

Needs the ``server`` extra (uvicorn with httptools and uvloop, orjson). Nothing here is
imported by ``import langchain_mesh``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app", "serve"]


def create_app(mesh: Any = None, **kwargs: Any) -> Any:
    """A :class:`~.app.MeshApp` over ``mesh`` (a Mesh, a config path or dict; None: ``Mesh.default()``)."""
    from ..mesh import Mesh
    from .app import MeshApp

    if not isinstance(mesh, Mesh):
        mesh = Mesh.default() if mesh is None else Mesh(mesh)
    return MeshApp(mesh, **kwargs)


def serve(*args: Any, **kwargs: Any) -> None:
    from .run import serve as _serve

    _serve(*args, **kwargs)
