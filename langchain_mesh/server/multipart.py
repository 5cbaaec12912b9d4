"""``multipart/form-data`` bodies (the images edits and variations endpoints), parsed with the standard
library's ``email`` parser: the gateway takes no extra dependency for two endpoints, and the body is
already bounded by the server's ``max_body_bytes`` limit (server/limits.py) before it gets here.

::

    fields, files = parse_form(body, content_type)   # {"prompt": "dog"}, {"image": [Upload(...)], "mask": [...]}
"""

from __future__ import annotations

import email.parser
import email.policy
from dataclasses import dataclass

from .errors import APIError

__all__ = ["Upload", "parse_form"]


@dataclass(frozen=True)
class Upload:
    filename: str
    content_type: str
    data: bytes


def parse_form(body: bytes, content_type: str) -> tuple[dict[str, str], dict[str, list[Upload]]]:
    """Text fields and uploaded files (by field name; ``image[]`` is read as ``image``)."""
    if not content_type.startswith("multipart/form-data") or "boundary=" not in content_type:
        raise APIError(400, "this endpoint takes a multipart/form-data body (image, mask, prompt, model...), "
                            f"not {content_type or 'a body without Content-Type'}", code="invalid_content_type")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
    if not message.is_multipart() or message.defects:
        raise APIError(400, "the multipart/form-data body could not be parsed", code="invalid_multipart")
    fields: dict[str, str] = {}
    files: dict[str, list[Upload]] = {}
    for part in message.iter_parts():
        name = str(part.get_param("name", header="content-disposition") or "")
        if not name:
            raise APIError(400, "a multipart part has no name", code="invalid_multipart")
        name = name.removesuffix("[]")
        payload = part.get_payload(decode=True) or b""
        filename = part.get_filename()
        if filename is not None:
            files.setdefault(name, []).append(Upload(filename, part.get_content_type(), payload))
        else:
            fields[name] = payload.decode("utf-8", errors="replace")
    return fields, files
