"""The per-user credential store: one file, encrypted at rest with AES-256-GCM.

::

    credentials:
      path: /var/lib/mesh/credentials.json     # default: $MESH_CREDENTIALS_FILE, else
                                               # ~/.local/share/langchain-mesh/credentials.json
      key: "{{env:MESH_CREDENTIALS_KEY}}"      # default: $MESH_CREDENTIALS_KEY, else the OS keyring

The key is 32 random bytes written as URL-safe base64 (``mesh credentials new-key`` prints one).
The file is JSON with a clear header (format, version, a key id) and the ciphertext of
``{"users": {user: {target: {field: value}}}}``; the header is the AEAD's associated data, so a
changed byte anywhere fails decryption ("tampered"), and the key id, an HMAC of a constant under the
key, tells a wrong key apart from tampering without revealing anything of the key.

Why AES-GCM from ``cryptography`` and not Fernet: the same library, but GCM authenticates the header
too. Writes are atomic (a new file renamed over the old one) and serialised by an advisory lock,
so two ``mesh serve`` workers or a worker and the CLI cannot lose each other's updates.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

from ..errors import ConfigError, CredentialError

__all__ = ["FileCredentialStore", "CredentialEntry", "new_key", "load_key", "default_path",
           "KEYRING_SERVICE", "KEYRING_NAME"]

FORMAT = "langchain-mesh-credentials"
VERSION = 1
KEYRING_SERVICE = "langchain-mesh"
KEYRING_NAME = "credentials-key"
_KEY_ENV = "MESH_CREDENTIALS_KEY"
_PATH_ENV = "MESH_CREDENTIALS_FILE"


@dataclass(frozen=True)
class CredentialEntry:
    """What ``list`` shows: who stored which fields for which target. Never a value."""

    user: str
    target: str
    fields: tuple[str, ...]


def new_key() -> str:
    """A fresh store key, URL-safe base64 of 32 random bytes."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode("ascii")


def _decode_key(text: str, where: str) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(text.strip().encode("ascii"))
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raw = b""
    if len(raw) != 32:
        raise CredentialError(f"the credential store key from {where} is not 32 bytes of URL-safe base64; "
                              "generate one with `mesh credentials new-key`")
    return raw


def load_key(configured: Any = None) -> bytes:
    """The store key: the config's ``credentials.key``, else ``$MESH_CREDENTIALS_KEY``, else the OS
    keyring (when the optional ``keyring`` package is installed)."""
    if configured is not None:
        return _decode_key(configured.get("credentials.key"), "credentials.key")
    env = os.environ.get(_KEY_ENV)
    if env:
        return _decode_key(env, f"${_KEY_ENV}")
    try:
        import keyring  # optional: the OS keyring (macOS Keychain, Secret Service, Windows vault)
    except ImportError:
        keyring = None
    if keyring is not None:
        try:
            stored = keyring.get_password(KEYRING_SERVICE, KEYRING_NAME)
        except Exception as e:  # noqa: BLE001 - no usable keyring backend: say so below
            stored = None
            why = f" (the OS keyring failed: {type(e).__name__})"
        else:
            why = ""
        if stored:
            return _decode_key(stored, "the OS keyring")
    else:
        why = " (install the 'keyring' package to keep it in the OS keyring)"
    raise CredentialError(
        f"no key for the credential store: set ${_KEY_ENV} (generate one with `mesh credentials new-key`), "
        f"set credentials.key in the mesh config, or store it in the OS keyring under service "
        f"{KEYRING_SERVICE!r}, name {KEYRING_NAME!r}{why}")


def default_path() -> Path:
    env = os.environ.get(_PATH_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "langchain-mesh" / "credentials.json"


def _aesgcm() -> type:
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError:  # pragma: no cover - the credentials extra
        raise ImportError("the credential store needs the cryptography package: "
                          "pip install 'langchain-mesh[credentials]'") from None
    return AESGCM


def _key_id(key: bytes) -> str:
    return hmac.new(key, b"langchain-mesh credentials key id", hashlib.sha256).hexdigest()[:16]


def _aad(key_id: str) -> bytes:
    return f"{FORMAT}/{VERSION}/AES-256-GCM/{key_id}".encode()


class FileCredentialStore:
    """Credentials by (user, target) -> {field: value}, in one encrypted file."""

    def __init__(self, path: os.PathLike[str] | str, key: bytes):
        if len(key) != 32:
            raise ConfigError("the credential store key must be 32 bytes")
        self.path = Path(path).expanduser()
        self._key = key
        self._key_id = _key_id(key)
        self._lock = threading.RLock()
        self._cache: Optional[tuple[tuple[int, int, int], dict[str, Any]]] = None

    # ---- reading ----------------------------------------------------------------------------------

    def _decrypt(self, blob: bytes) -> dict[str, Any]:
        AESGCM = _aesgcm()
        from cryptography.exceptions import InvalidTag

        try:
            doc = json.loads(blob)
            if doc.get("format") != FORMAT:
                raise ValueError
            version, key_id = doc["version"], doc["key_id"]
            nonce, data = base64.b64decode(doc["nonce"]), base64.b64decode(doc["data"])
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
            raise CredentialError(f"{self.path} is not a langchain-mesh credential file (or its header "
                                  "was damaged)") from None
        if version != VERSION:
            raise CredentialError(f"{self.path} is a version {version} credential file; this langchain-mesh "
                                  f"reads version {VERSION}")
        if key_id != self._key_id:
            raise CredentialError(f"wrong key for the credential file {self.path}: it was encrypted with "
                                  f"another key (key id {key_id}, this key's id {self._key_id}). Use the key "
                                  "it was written with ($MESH_CREDENTIALS_KEY or credentials.key)")
        try:
            plain = AESGCM(self._key).decrypt(nonce, data, _aad(key_id))
        except InvalidTag:
            raise CredentialError(f"the credential file {self.path} failed its integrity check: it was modified "
                                  "or corrupted after it was written (tampering detected); restore it from a "
                                  "backup or delete it and have users set their credentials again") from None
        return json.loads(plain)

    def _load(self) -> dict[str, Any]:
        """The decrypted content, re-read only when the file changed (one stat per call)."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return {"users": {}}
        except OSError as e:
            raise CredentialError(f"cannot read the credential file {self.path}: {e.strerror}") from None
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        cached = self._cache
        if cached is not None and cached[0] == stamp:
            return cached[1]
        try:
            blob = self.path.read_bytes()
        except OSError as e:
            raise CredentialError(f"cannot read the credential file {self.path}: {e.strerror}") from None
        content = self._decrypt(blob)
        self._cache = (stamp, content)
        return content

    def get(self, user: str, target: str) -> Optional[dict[str, str]]:
        with self._lock:
            found = self._load()["users"].get(user, {}).get(target)
        return dict(found) if found else None

    def list(self, user: Optional[str] = None) -> list[CredentialEntry]:
        with self._lock:
            users = self._load()["users"]
        out = []
        for u in sorted(users):
            if user is not None and u != user:
                continue
            for t in sorted(users[u]):
                out.append(CredentialEntry(u, t, tuple(sorted(users[u][t]))))
        return out

    # ---- writing ----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Serialise read-modify-write across threads and processes (an advisory lock file)."""
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            lock_path = self.path.with_name(self.path.name + ".lock")
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                try:
                    import fcntl

                    fcntl.flock(fd, fcntl.LOCK_EX)
                except ImportError:  # pragma: no cover - Windows: the thread lock only
                    pass
                yield
            finally:
                os.close(fd)  # closing releases the flock

    def _write(self, content: dict[str, Any]) -> None:
        AESGCM = _aesgcm()
        nonce = os.urandom(12)
        data = AESGCM(self._key).encrypt(nonce, json.dumps(content).encode(), _aad(self._key_id))
        doc = {"format": FORMAT, "version": VERSION, "cipher": "AES-256-GCM", "key_id": self._key_id,
               "nonce": base64.b64encode(nonce).decode(), "data": base64.b64encode(data).decode()}
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(doc, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self._cache = None

    def set(self, user: str, target: str, values: dict[str, str]) -> None:
        """Store (or replace) ``values``' fields of ``user``'s credential for ``target``."""
        if not user or not target:
            raise CredentialError("a credential needs a user and a target")
        for k, v in values.items():
            if not isinstance(v, str) or not v:
                raise CredentialError(f"credential field {k!r} must be a non-empty string")
        with self._exclusive():
            content = self._load()
            content = json.loads(json.dumps(content))  # a private copy: the cached one stays intact on failure
            content["users"].setdefault(user, {}).setdefault(target, {}).update(values)
            self._write(content)

    def delete(self, user: str, target: str, fields: Optional[list[str]] = None) -> bool:
        """Remove ``user``'s credential for ``target`` (or only ``fields`` of it). False if none was stored."""
        with self._exclusive():
            content = json.loads(json.dumps(self._load()))
            entry = content["users"].get(user, {}).get(target)
            if entry is None:
                return False
            if fields:
                removed = [f for f in fields if entry.pop(f, None) is not None]
                if not removed:
                    return False
            if not fields or not entry:
                del content["users"][user][target]
                if not content["users"][user]:
                    del content["users"][user]
            self._write(content)
            return True

    def __repr__(self) -> str:
        return f"FileCredentialStore(path={str(self.path)!r})"
