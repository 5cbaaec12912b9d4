"""Running the app under uvicorn (httptools + uvloop): what ``mesh serve`` calls.

One worker serves the Mesh built by the caller. With ``workers > 1`` uvicorn starts processes that
each import :func:`app_factory`, which builds that process's Mesh (and so its clients and pools)
once from the config path passed in ``$MESH_SERVE_CONFIG`` (and turns the usage log on when
``$MESH_SERVE_USAGE_LOG`` says so: logging set up in the parent does not reach a worker).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Optional

__all__ = ["serve", "app_factory"]

_CONFIG_ENV = "MESH_SERVE_CONFIG"
_USAGE_LOG_ENV = "MESH_SERVE_USAGE_LOG"


def app_factory() -> Any:
    from ..mesh import Mesh
    from .app import MeshApp

    if os.environ.get(_USAGE_LOG_ENV) == "1":
        _log_usage()
    path = os.environ.get(_CONFIG_ENV)
    return MeshApp(Mesh(path) if path else Mesh())


def _log_usage() -> None:
    logger = logging.getLogger("langchain_mesh.server.usage")
    logger.setLevel(logging.INFO)
    logger.addHandler(logging.StreamHandler())


def serve(mesh: Any, config_path: Optional[str], host: Optional[str] = None, port: Optional[int] = None,
          workers: int = 1, log_level: str = "info", access_log: bool = False, usage_log: bool = False) -> None:
    """Serve ``mesh`` until interrupted. Refuses a non-loopback host when no API keys are configured.

    ``usage_log`` prints one JSON line per request (key name, endpoint, LLM, status, tokens, ms) on
    stderr, from the ``langchain_mesh.server.usage`` logger.
    """
    try:
        import uvicorn

        from .app import MeshApp  # orjson, httptools (through the connections)
        from .protocol import MeshHttpProtocol  # httptools, ASGI to the app, header size and time limits
    except ImportError as e:
        from ..errors import CapabilityError

        raise CapabilityError(f"mesh serve needs the server extra ({e.name} is missing): "
                              "pip install 'langchain-mesh[server]'") from None
    from .auth import KeyRing, check_bind

    host = host or mesh.config.server.host
    port = mesh.config.server.port if port is None else port
    check_bind(host, KeyRing(mesh.config.server))
    if usage_log and workers == 1:
        _log_usage()
    # httptools + uvloop: the fastest stack (protocol.py says why the protocol is ours); no access log by
    # default (a line per request costs more than the rest of a cached request's handling)
    options: dict[str, Any] = dict(host=host, port=port, loop="uvloop", http=MeshHttpProtocol,
                                   log_level=log_level,
                                   access_log=access_log, lifespan="on", proxy_headers=False)
    if workers > 1:
        if not config_path:
            os.environ.pop(_CONFIG_ENV, None)
        else:
            os.environ[_CONFIG_ENV] = os.path.abspath(config_path)
        os.environ[_USAGE_LOG_ENV] = "1" if usage_log else "0"
        uvicorn.run("langchain_mesh.server.run:app_factory", factory=True, workers=workers, **options)
    else:
        uvicorn.run(MeshApp(mesh), **options)
