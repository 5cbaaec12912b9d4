"""Server-sent events, as the providers' streaming APIs send them: the ``data`` of each event.

Shared by every connection that reads an SSE body (OpenAI's format, Snowflake Cortex...).
"""

from __future__ import annotations

from typing import AsyncIterator, Iterable, Iterator, Optional

__all__ = ["SSEDecoder", "iter_sse_data", "aiter_sse_data"]


class SSEDecoder:
    """Server-sent events, line by line: :meth:`line` returns an event's ``data`` at its end.

    Multi-line data fields are joined with newlines (per the SSE spec); comments and other fields
    (``event:``, ``id:``, ``retry:``) are skipped; ``[DONE]`` sets :attr:`done`.
    """

    __slots__ = ("_buf", "done")

    def __init__(self) -> None:
        self._buf: list[str] = []
        self.done = False

    def line(self, line: str) -> Optional[str]:
        if line:
            if line.startswith("data:"):
                self._buf.append(line[6:] if line.startswith("data: ") else line[5:])
            return None
        return self.end()

    def end(self) -> Optional[str]:
        """The pending event's data (call once more when the body ends without a blank line)."""
        if not self._buf:
            return None
        data = "\n".join(self._buf)
        self._buf = []
        if data == "[DONE]":
            self.done = True
            return None
        return data


def iter_sse_data(lines: Iterable[str]) -> Iterator[str]:
    """The ``data`` payloads of a server-sent-event stream, ending at ``[DONE]``."""
    dec = SSEDecoder()
    for line in lines:
        data = dec.line(line)
        if data is not None:
            yield data
        elif dec.done:
            return
    data = dec.end()
    if data is not None:
        yield data


async def aiter_sse_data(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    dec = SSEDecoder()
    async for line in lines:
        data = dec.line(line)
        if data is not None:
            yield data
        elif dec.done:
            return
    data = dec.end()
    if data is not None:
        yield data
