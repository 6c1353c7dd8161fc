"""The policies in force at the service: stored documents, or the shipped defaults."""

from __future__ import annotations

import threading

from attestation._service._store import Store
from policies import AppraisalPolicy, KeyReleasePolicy, default_text

__all__ = ["POLICY_KINDS", "PolicyStore", "policy_kind"]

POLICY_KINDS: dict[str, type[AppraisalPolicy] | type[KeyReleasePolicy]] = {
    "appraisal": AppraisalPolicy,
    "key-release": KeyReleasePolicy,
}
_DEFAULT_NAMES = {"appraisal": "appraisal", "key-release": "key_release"}


def policy_kind(text: str) -> str | None:
    """``appraisal`` or ``key-release`` (``key_release`` accepted); ``None`` otherwise."""
    kind = text.replace("_", "-")
    return kind if kind in POLICY_KINDS else None


class PolicyStore:
    """Parsed policies, re-read only when the stored digest changes."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._cache: dict[str, tuple[str, AppraisalPolicy | KeyReleasePolicy]] = {}
        self._lock = threading.Lock()

    def _get(self, kind: str) -> AppraisalPolicy | KeyReleasePolicy:
        stored = self._store.policy(kind)
        cls = POLICY_KINDS[kind]
        if stored is None:
            text, digest = default_text(_DEFAULT_NAMES[kind]), "default"
        else:
            text, digest = stored
        with self._lock:
            hit = self._cache.get(kind)
            if hit is not None and hit[0] == digest:
                return hit[1]
        document = cls.from_toml(text)
        with self._lock:
            self._cache[kind] = (digest, document)
        return document

    def appraisal(self) -> AppraisalPolicy:
        policy = self._get("appraisal")
        assert isinstance(policy, AppraisalPolicy)
        return policy

    def key_release(self) -> KeyReleasePolicy:
        policy = self._get("key-release")
        assert isinstance(policy, KeyReleasePolicy)
        return policy

    def get(self, kind: str) -> AppraisalPolicy | KeyReleasePolicy:
        return self._get(kind)

    def is_default(self, kind: str) -> bool:
        return self._store.policy(kind) is None

    def set(self, kind: str, text: str, now: float) -> AppraisalPolicy | KeyReleasePolicy:
        """Parse (``PolicyError`` on a bad document) and store ``text`` canonically."""
        document = POLICY_KINDS[kind].from_toml(text)
        self._store.set_policy(kind, document.to_toml(), document.digest_hex(), now)
        return document
