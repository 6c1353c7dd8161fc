"""The attestation service's state: SQLite (WAL) in a state directory, plus key files.

State directory layout (directory and ``keys/`` 0700, private key files 0600)::

    STATE/
      service.db                 SQLite, WAL journal: the tables below
      keys/master.key            32 bytes: AES-256-GCM key for resources at rest
      keys/token-<kid>.pem       ES384 (P-384) private keys signing attestation results

Tables: ``nonces`` (challenges: single use, expiry), ``reference_values`` (registered
launches), ``policies`` (the appraisal and key-release documents in force),
``resources`` (secret versions, AES-GCM ciphertexts), ``signing_keys`` (token keys and
when they were retired), ``admin_jti`` (seen operator-request ids, for replay
protection) and ``audit`` (an append-only log, hash-chained).

Concurrency: each thread has its own connection; writes run in ``BEGIN IMMEDIATE``
transactions, and a nonce is consumed by one conditional ``UPDATE`` whose row count
says whether *this* request consumed it, so no nonce is ever accepted twice, also across
threads and processes sharing the directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import sqlite3
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attestation._errors import MalformedError
from policies import ReferenceValue

__all__ = ["AuditEntry", "Registration", "Store", "StoredResource"]

SCHEMA_VERSION = "1"
DIR_MODE = 0o700
KEY_MODE = 0o600
GENESIS_HASH = "0" * 64

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS nonces (
    nonce BLOB PRIMARY KEY,
    expires REAL NOT NULL,
    used INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS nonces_expires ON nonces (expires);
CREATE TABLE IF NOT EXISTS reference_values (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    measurement BLOB NOT NULL,
    host_data BLOB,
    launch_config TEXT,
    label TEXT NOT NULL,
    created REAL NOT NULL,
    expires REAL,
    revoked REAL
);
CREATE TABLE IF NOT EXISTS policies (
    kind TEXT PRIMARY KEY,
    document TEXT NOT NULL,
    digest TEXT NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS resources (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    nonce BLOB NOT NULL,
    ciphertext BLOB NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS signing_keys (
    kid TEXT PRIMARY KEY,
    created REAL NOT NULL,
    retired REAL
);
CREATE TABLE IF NOT EXISTS admin_jti (
    jti TEXT PRIMARY KEY,
    expires REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    event TEXT NOT NULL,
    outcome TEXT NOT NULL,
    actor TEXT NOT NULL,
    detail TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
"""


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` 0700 (or check an existing one is not open to group/others)."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    check_private(path)


def check_private(path: Path) -> None:
    """Fail closed when ``path`` is accessible to group or others."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise MalformedError(
            f"{path} is accessible to group/others (mode {mode:o}); "
            f"it must be {'0700' if path.is_dir() else '0600'}"
        )


def write_private(path: Path, data: bytes) -> None:
    """Atomically create ``path`` with mode 0600 holding ``data``."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_MODE)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def read_private(path: Path) -> bytes:
    """Read a private key file after checking its mode."""
    check_private(path)
    return path.read_bytes()


@dataclass(frozen=True, slots=True)
class Registration:
    """A registered reference value (a launch the operator allows)."""

    id: int
    measurement: bytes
    host_data: bytes | None
    launch_config: str | None
    label: str
    created: float
    expires: float | None
    revoked: float | None

    def active(self, now: float) -> bool:
        """Neither revoked nor expired at ``now``."""
        if self.revoked is not None and self.revoked <= now:
            return False
        return self.expires is None or now < self.expires

    def state(self, now: float) -> str:
        """``active``, ``revoked`` or ``expired``."""
        if self.revoked is not None and self.revoked <= now:
            return "revoked"
        if self.expires is not None and now >= self.expires:
            return "expired"
        return "active"

    @property
    def reference_value(self) -> ReferenceValue:
        """As the policies package's ``ReferenceValue``."""
        return ReferenceValue(
            measurement=self.measurement, label=self.label, host_data=self.host_data
        )

    def to_json(self, now: float) -> dict[str, Any]:
        return {
            "id": self.id,
            "measurement": self.measurement.hex(),
            "host_data": None if self.host_data is None else self.host_data.hex(),
            "launch_config": self.launch_config,
            "label": self.label,
            "created": self.created,
            "expires": self.expires,
            "revoked": self.revoked,
            "state": self.state(now),
        }


@dataclass(frozen=True, slots=True)
class StoredResource:
    """One stored version of a resource (still encrypted)."""

    name: str
    version: int
    nonce: bytes
    ciphertext: bytes
    created: float


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One audit-log entry; ``hash`` = SHA-256 over ``prev_hash`` and the entry."""

    id: int
    at: float
    event: str
    outcome: str
    actor: str
    detail: dict[str, Any]
    prev_hash: str
    hash: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at,
            "event": self.event,
            "outcome": self.outcome,
            "actor": self.actor,
            "detail": self.detail,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


def audit_hash(
    prev_hash: str, *, at: float, event: str, outcome: str, actor: str, detail: str
) -> str:
    """The chained hash of one entry (``detail`` as stored: canonical JSON text)."""
    material = json.dumps(
        [prev_hash, repr(at), event, outcome, actor, detail], separators=(",", ":")
    ).encode()
    return hashlib.sha256(material).hexdigest()


class Store:
    """The SQLite database of one state directory (thread-safe: a connection per thread)."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        ensure_private_dir(self.state_dir)
        ensure_private_dir(self.keys_dir)
        self.path = self.state_dir / "service.db"
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        conn = self._conn()
        conn.executescript(_SCHEMA)
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if row is None:
            conn.execute("INSERT INTO meta (key, value) VALUES ('schema', ?)", (SCHEMA_VERSION,))
        elif row[0] != SCHEMA_VERSION:
            raise MalformedError(f"{self.path}: unsupported schema version {row[0]}")
        os.chmod(self.path, KEY_MODE)

    @property
    def keys_dir(self) -> Path:
        return self.state_dir / "keys"

    # -- connections -----------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            if self._closed:
                raise MalformedError("the state store is closed")
            conn = sqlite3.connect(
                self.path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA busy_timeout = 30000")
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE``: the write lock is taken up front)."""
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        """Close every connection (the store cannot be used afterwards)."""
        with self._lock:
            self._closed = True
            conns, self._all = self._all, []
        for conn in conns:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    # -- nonces ----------------------------------------------------------------------

    def outstanding_nonces(self, now: float) -> int:
        row = (
            self._conn()
            .execute("SELECT COUNT(*) FROM nonces WHERE used = 0 AND expires > ?", (now,))
            .fetchone()
        )
        return int(row[0])

    def add_nonce(self, nonce: bytes, expires: float, now: float) -> None:
        """Store a fresh nonce (and purge nonces that expired a while ago)."""
        with self._write() as db:
            db.execute("DELETE FROM nonces WHERE expires < ?", (now - 3600.0,))
            db.execute(
                "INSERT INTO nonces (nonce, expires, used) VALUES (?, ?, 0)", (nonce, expires)
            )

    def consume_nonce(self, nonce: bytes, now: float) -> bool:
        """Mark ``nonce`` used if it is known, unused and unexpired; whether this call did.

        One conditional UPDATE: of any number of concurrent callers, exactly one sees a
        row count of 1.
        """
        conn = self._conn()
        cursor = conn.execute(
            "UPDATE nonces SET used = 1 WHERE nonce = ? AND used = 0 AND expires > ?",
            (nonce, now),
        )
        return cursor.rowcount == 1

    def nonce_state(self, nonce: bytes, now: float) -> str:
        """``unknown``, ``used``, ``expired`` (for the refusal's detail)."""
        row = (
            self._conn()
            .execute("SELECT used, expires FROM nonces WHERE nonce = ?", (nonce,))
            .fetchone()
        )
        if row is None:
            return "unknown"
        if row[0]:
            return "used"
        return "expired" if row[1] <= now else "unused"

    # -- reference values ------------------------------------------------------------

    def add_reference_value(
        self,
        *,
        measurement: bytes,
        host_data: bytes | None,
        launch_config: str | None,
        label: str,
        created: float,
        expires: float | None,
    ) -> Registration:
        with self._write() as db:
            cursor = db.execute(
                "INSERT INTO reference_values "
                "(measurement, host_data, launch_config, label, created, expires) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (measurement, host_data, launch_config, label, created, expires),
            )
            rid = cursor.lastrowid
        assert rid is not None
        found = self.reference_value(rid)
        assert found is not None
        return found

    def reference_value(self, rid: int) -> Registration | None:
        row = (
            self._conn()
            .execute(
                "SELECT id, measurement, host_data, launch_config, label, created, expires, "
                "revoked FROM reference_values WHERE id = ?",
                (rid,),
            )
            .fetchone()
        )
        return None if row is None else Registration(*row)

    def reference_values(self) -> list[Registration]:
        rows = (
            self._conn()
            .execute(
                "SELECT id, measurement, host_data, launch_config, label, created, expires, "
                "revoked FROM reference_values ORDER BY id"
            )
            .fetchall()
        )
        return [Registration(*row) for row in rows]

    def active_reference_values(self, now: float) -> list[Registration]:
        rows = (
            self._conn()
            .execute(
                "SELECT id, measurement, host_data, launch_config, label, created, expires, "
                "revoked FROM reference_values "
                "WHERE (revoked IS NULL OR revoked > ?) AND (expires IS NULL OR expires > ?) "
                "ORDER BY id",
                (now, now),
            )
            .fetchall()
        )
        return [Registration(*row) for row in rows]

    def revoke_reference_value(self, rid: int, now: float) -> Registration | None:
        """Revoke (idempotent); ``None`` when there is no such registration."""
        with self._write() as db:
            db.execute(
                "UPDATE reference_values SET revoked = ? WHERE id = ? AND revoked IS NULL",
                (now, rid),
            )
        return self.reference_value(rid)

    # -- policies --------------------------------------------------------------------

    def policy(self, kind: str) -> tuple[str, str] | None:
        """``(document, digest hex)`` of the stored policy of ``kind``."""
        row = (
            self._conn()
            .execute("SELECT document, digest FROM policies WHERE kind = ?", (kind,))
            .fetchone()
        )
        return None if row is None else (str(row[0]), str(row[1]))

    def set_policy(self, kind: str, document: str, digest: str, now: float) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO policies (kind, document, digest, updated) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (kind) DO UPDATE SET document = excluded.document, "
                "digest = excluded.digest, updated = excluded.updated",
                (kind, document, digest, now),
            )

    # -- resources -------------------------------------------------------------------

    def add_resource_version(
        self, name: str, nonce: bytes, ciphertext_for: Any, now: float
    ) -> StoredResource:
        """Append the next version of ``name``; ``ciphertext_for(version)`` encrypts it."""
        with self._write() as db:
            row = db.execute(
                "SELECT MAX(version) FROM resources WHERE name = ?", (name,)
            ).fetchone()
            version = 1 if row[0] is None else int(row[0]) + 1
            ciphertext = ciphertext_for(version)
            db.execute(
                "INSERT INTO resources (name, version, nonce, ciphertext, created) "
                "VALUES (?, ?, ?, ?, ?)",
                (name, version, nonce, ciphertext, now),
            )
        return StoredResource(name, version, nonce, ciphertext, now)

    def latest_resource(self, name: str) -> StoredResource | None:
        row = (
            self._conn()
            .execute(
                "SELECT name, version, nonce, ciphertext, created FROM resources "
                "WHERE name = ? ORDER BY version DESC LIMIT 1",
                (name,),
            )
            .fetchone()
        )
        return None if row is None else StoredResource(*row)

    def resources(self) -> list[tuple[str, int, float]]:
        """``(name, latest version, created)`` per resource."""
        rows = (
            self._conn()
            .execute(
                "SELECT name, MAX(version), MAX(created) FROM resources GROUP BY name ORDER BY name"
            )
            .fetchall()
        )
        return [(str(r[0]), int(r[1]), float(r[2])) for r in rows]

    # -- signing keys ----------------------------------------------------------------

    def signing_keys(self) -> list[tuple[str, float, float | None]]:
        """``(kid, created, retired)``, newest first."""
        rows = (
            self._conn()
            .execute(
                "SELECT kid, created, retired FROM signing_keys ORDER BY created DESC, rowid DESC"
            )
            .fetchall()
        )
        return [(str(r[0]), float(r[1]), None if r[2] is None else float(r[2])) for r in rows]

    def add_signing_key(self, kid: str, now: float) -> None:
        """Make ``kid`` the current key, retiring the previous current key."""
        with self._write() as db:
            db.execute("UPDATE signing_keys SET retired = ? WHERE retired IS NULL", (now,))
            db.execute(
                "INSERT INTO signing_keys (kid, created, retired) VALUES (?, ?, NULL)", (kid, now)
            )

    def drop_signing_key(self, kid: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM signing_keys WHERE kid = ?", (kid,))

    # -- operator request ids --------------------------------------------------------

    def use_jti(self, jti: str, expires: float, now: float) -> bool:
        """Record an operator request id; ``False`` when it was seen before (a replay)."""
        with self._write() as db:
            db.execute("DELETE FROM admin_jti WHERE expires < ?", (now,))
            cursor = db.execute(
                "INSERT OR IGNORE INTO admin_jti (jti, expires) VALUES (?, ?)", (jti, expires)
            )
            return cursor.rowcount == 1

    # -- audit log -------------------------------------------------------------------

    def audit(
        self, event: str, outcome: str, actor: str, detail: dict[str, Any], now: float
    ) -> AuditEntry:
        """Append an entry, chained to the previous one."""
        text = json.dumps(detail, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        with self._write() as db:
            row = db.execute("SELECT hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
            prev = GENESIS_HASH if row is None else str(row[0])
            digest = audit_hash(
                prev, at=now, event=event, outcome=outcome, actor=actor, detail=text
            )
            cursor = db.execute(
                "INSERT INTO audit (at, event, outcome, actor, detail, prev_hash, hash) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (now, event, outcome, actor, text, prev, digest),
            )
            aid = cursor.lastrowid
        assert aid is not None
        return AuditEntry(aid, now, event, outcome, actor, detail, prev, digest)

    def audit_entries(self, after: int = 0, limit: int = 100) -> list[AuditEntry]:
        rows = (
            self._conn()
            .execute(
                "SELECT id, at, event, outcome, actor, detail, prev_hash, hash FROM audit "
                "WHERE id > ? ORDER BY id LIMIT ?",
                (after, limit),
            )
            .fetchall()
        )
        return [
            AuditEntry(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), r[6], r[7]) for r in rows
        ]

    def verify_audit_chain(self) -> tuple[bool, int]:
        """Recompute every hash: ``(intact, number of entries)``."""
        prev = GENESIS_HASH
        count = 0
        for row in self._conn().execute(
            "SELECT at, event, outcome, actor, detail, prev_hash, hash FROM audit ORDER BY id"
        ):
            at, event, outcome, actor, detail, prev_hash, digest = row
            if (
                prev_hash != prev
                or audit_hash(prev, at=at, event=event, outcome=outcome, actor=actor, detail=detail)
                != digest
            ):
                return False, count
            prev = digest
            count += 1
        return True, count
