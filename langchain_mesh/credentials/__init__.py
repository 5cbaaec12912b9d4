"""Per-user credentials: who is calling, where their credentials are kept, and the connections
built from them. See :mod:`.identity`, :mod:`.store` and :mod:`.per_user`."""

from __future__ import annotations

from .identity import acting_as, current_user, os_user
from .store import CredentialEntry, FileCredentialStore, load_key, new_key

__all__ = ["acting_as", "current_user", "os_user", "CredentialEntry", "FileCredentialStore", "load_key",
           "new_key"]
