"""Who owns which evaluation keys on the HTTP service, and how many each client may keep.

Every client proves who it is with a client token it chose (at least 32 URL-safe characters,
sent in the ``X-Client-Token`` header). The service stores only the SHA-256 of each token and
compares digests in constant time. A key set belongs to the token that uploaded it: any other
token is told the key id does not exist (404), so key ids are not even confirmed to others.

Eviction is per client: a client's new upload pushes out that client's own oldest key set when
it holds ``per_client`` sets already. When the service as a whole holds ``capacity`` sets, only
sets left unused for ``idle_s`` seconds may be dropped for a newcomer; otherwise the upload is
refused (:class:`StoreFullError`), and nobody loses keys to someone else's uploads.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from dataclasses import dataclass, field

CLIENT_TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_\-]{32,256}")
"""A client token: 32 to 256 URL-safe characters (``secrets.token_urlsafe(32)`` gives 43)."""

KEY_ID_PATTERN = re.compile(r"[0-9a-f]{32}")
"""A key id as the service makes them (``uuid4().hex``)."""


class StoreFullError(RuntimeError):
    """The service holds as many key sets as it may, all in recent use."""


def token_digest(token: str) -> bytes:
    """SHA-256 of a token (a client token or the API token): the only form the service keeps.

    A fast hash is enough: tokens are long random strings, not passwords. A header may carry
    any characters, so the encoding never fails; a wrong token just gets another digest.
    """
    return hashlib.sha256(token.encode("utf-8", errors="replace")).digest()


@dataclass
class _KeySet:
    owner: bytes
    last_used: float = field(default_factory=time.monotonic)


class KeyOwners:
    """Ownership records of key ids, with per-client and global quotas.

    Not thread-safe: the HTTP service uses it from its event loop only.

    Parameters
    ----------
    per_client : int
        Key sets one client token may hold; its own oldest is evicted beyond.
    capacity : int
        Key sets held by the whole service.
    idle_s : float
        A key set unused for this long may be dropped when the service is full.
    """

    def __init__(self, per_client: int, capacity: int, idle_s: float):
        if not 1 <= per_client <= capacity:
            raise ValueError(
                f"Need 1 <= per_client <= capacity, got per_client={per_client}, "
                f"capacity={capacity}."
            )
        self.per_client = per_client
        self.capacity = capacity
        self.idle_s = idle_s
        self._sets: dict[str, _KeySet] = {}

    def __len__(self) -> int:
        return len(self._sets)

    def make_room(self, token: str) -> list[str]:
        """Key ids to remove so that ``token`` may add one more set (oldest first).

        Raises :class:`StoreFullError` when only other clients' recently used sets would make
        room. The ids are forgotten here; the caller removes their files.
        """
        owner = token_digest(token)
        own = [key_id for key_id, entry in self._sets.items() if entry.owner == owner]
        evicted = own[: max(0, len(own) - self.per_client + 1)]
        if len(self._sets) - len(evicted) >= self.capacity:
            now = time.monotonic()
            idle = sorted(
                (entry.last_used, key_id)
                for key_id, entry in self._sets.items()
                if now - entry.last_used > self.idle_s and key_id not in evicted
            )
            needed = len(self._sets) - len(evicted) - self.capacity + 1
            if len(idle) < needed:
                raise StoreFullError(
                    f"The service holds {self.capacity} evaluation key sets, all in use: retry "
                    "later, or ask its operator for a larger --max-keys."
                )
            evicted += [key_id for _, key_id in idle[:needed]]
        for key_id in evicted:
            del self._sets[key_id]
        return evicted

    def add(self, key_id: str, token: str) -> None:
        """Record ``token`` as the owner of ``key_id`` (call :meth:`make_room` first)."""
        self._sets[key_id] = _KeySet(token_digest(token))

    def owns(self, token: str, key_id: str) -> bool:
        """Whether ``token`` owns ``key_id``; marks the set as used when it does."""
        entry = self._sets.get(key_id)
        # Compare a digest even for unknown ids, so that timing tells nothing about them.
        expected = entry.owner if entry is not None else bytes(32)
        if hmac.compare_digest(expected, token_digest(token)) and entry is not None:
            entry.last_used = time.monotonic()
            return True
        return False

    def remove(self, key_id: str) -> None:
        self._sets.pop(key_id, None)
