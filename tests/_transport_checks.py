"""What every hosted connection's suite checks the same way: an answer slower than the connection's
timeout, and a server that refuses the connection. Each suite builds the mesh its own way (config keys
differ: ``base_url``, ``endpoint_url``...) and passes the LLM here."""

from __future__ import annotations

import time
from typing import Any, Optional

import pytest

from langchain_mesh.errors import ProviderConnectionError, ProviderTimeoutError


def _ask(llm: Any) -> Any:
    return llm.new_completion().with_message("hi")


async def assert_times_out(srv: Any, llm: Any, delay: float, *, also_async: bool = True,
                           within: Optional[float] = None) -> None:
    """An answer ``delay`` seconds late is a ProviderTimeoutError (sync, then async), raised within
    ``within`` seconds of the first request in all."""
    started = time.monotonic()
    srv.script(delay=delay, text="too late")
    with pytest.raises(ProviderTimeoutError):
        _ask(llm).execute()
    if also_async:
        srv.script(delay=delay, text="too late")
        with pytest.raises(ProviderTimeoutError):
            await _ask(llm).aexecute()
    if within is not None:
        assert time.monotonic() - started < within


def assert_refused(llm: Any, match: Optional[str] = "cannot reach", stream: bool = True) -> None:
    """A refused connection is a ProviderConnectionError (whose message matches ``match``), for a
    completion and, with ``stream``, for a stream."""
    with pytest.raises(ProviderConnectionError, match=match):
        _ask(llm).execute()
    if stream:
        with pytest.raises(ProviderConnectionError):
            list(_ask(llm).execute_streamed())
