"""The simulated SEV-SNP platform: an AMD-like chain in a state directory, signed reports.

Development and CI machines have no SEV-SNP hardware. This module plays the AMD secure
processor's part: it holds a simulated ARK/ASK/ASVK (see :mod:`attestation._sim_chain`),
derives a VCEK per reported TCB from a persisted chip secret (as the real VCEK is derived
from the chip's secret and its TCB), launches guests (MEASUREMENT from the launch
artifacts, HOST_DATA from the launcher, POLICY) and answers their report requests with
reports in the exact ABI layout (AMD pub. 56860, Table 23), signed with ECDSA P-384 /
SHA-384 over bytes 0x000-0x29F, R and S little-endian in 72-byte fields.

The verifier checks simulated evidence with the same code as real evidence. The simulated
root is *never* trusted by default: the state directory contains a ``roots/`` directory in
the ``--roots DIR`` layout, which a verifier uses only when it is explicitly given.

State directory layout (directories 0700, private keys and seeds 0600)::

    STATE/
      platform.json              product, CHIP_ID, TCBs, firmware version, CSP_ID
      keys/ark.key.pem           RSA-4096 private keys (PKCS#8 PEM)
      keys/ask.key.pem
      keys/asvk.key.pem
      keys/chip.seed             32-byte secret: VCEK = HKDF(chip.seed, product, TCB)
      keys/vlek.seed             32-byte secret: VLEK = HKDF(vlek.seed, product, TCB)
      certs/ark.pem  certs/ask.pem  certs/asvk.pem
      certs/vcek.der             VCEK for the reported TCB
      certs/vlek.der             VLEK for the reported TCB
      certs/cert_chain.pem       ASK then ARK (AMD KDS ``cert_chain`` order)
      certs/vlek_cert_chain.pem  ASVK then ARK
      roots/<product>/ark.pem    the ``--roots DIR`` layout (product lower case)
      roots/<product>/ask.pem
      roots/<product>/asvk.pem
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from attestation import _sim_chain as chain
from attestation._abi import AttestationReport, GuestPolicy, PlatformInfo, SigningKey
from attestation._certtable import CertTable
from attestation._errors import MalformedError
from attestation._measure import LaunchArtifacts, launch_measurement
from attestation._provider import GuestReport, check_report_request
from attestation._types import Product, TcbVersion

__all__ = [
    "DEFAULT_TCB",
    "SimulatedPlatform",
    "SimulatedProvider",
]

STATE_FORMAT = "pmc2-simulated-snp/1"
DEFAULT_CSP_ID = "PMC2 simulated CSP"

#: Plausible TCBs per product (SPLs 0..127, microcode 0..255).
DEFAULT_TCB = {
    Product.MILAN: TcbVersion(bootloader=4, tee=0, snp=22, microcode=213),
    Product.GENOA: TcbVersion(bootloader=9, tee=0, snp=23, microcode=72),
    Product.TURIN: TcbVersion(bootloader=1, tee=1, snp=3, microcode=73, fmc=1),
}
#: CPUID family, model, stepping written to version 3+ reports (matching the productName).
CPUID = {
    Product.MILAN: (0x19, 0x01, 0x00),
    Product.GENOA: (0x19, 0x11, 0x01),
    Product.TURIN: (0x1A, 0x02, 0x00),
}
#: SNP firmware (major, minor, build) reported as CURRENT/COMMITTED versions.
FIRMWARE = {Product.MILAN: (1, 55, 21), Product.GENOA: (1, 55, 37), Product.TURIN: (1, 58, 4)}

_DIR_MODE = 0o700
_KEY_MODE = 0o600
_PUB_MODE = 0o644


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Atomically write ``data`` with ``mode`` (created with it, never wider)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _mkdir_private(path: Path) -> None:
    path.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
    os.chmod(path, _DIR_MODE)


def _check_private(path: Path) -> None:
    """Fail closed when a key file or directory is accessible to group or others."""
    mode = path.stat().st_mode
    if stat.S_IMODE(mode) & 0o077:
        raise MalformedError(
            f"{path} is accessible to group/others (mode {stat.S_IMODE(mode):o}); "
            f"the simulated platform's secrets must be {'0700' if path.is_dir() else '0600'}"
        )


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _tcb_json(tcb: TcbVersion) -> dict[str, int]:
    return tcb.components()


def _tcb_from_json(doc: Any, product: Product) -> TcbVersion:
    if not isinstance(doc, dict):
        raise MalformedError("platform.json: a TCB must be an object")
    try:
        tcb = TcbVersion(
            bootloader=int(doc["bootloader"]),
            tee=int(doc["tee"]),
            snp=int(doc["snp"]),
            microcode=int(doc["microcode"]),
            fmc=int(doc["fmc"]) if "fmc" in doc else None,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedError(f"platform.json: bad TCB {doc!r}") from exc
    if (tcb.fmc is not None) != product.has_fmc:
        raise MalformedError(f"platform.json: TCB {doc!r} does not fit {product.value}")
    return tcb


@dataclass(frozen=True, slots=True)
class _State:
    product: Product
    chip_id: bytes
    current_tcb: TcbVersion
    reported_tcb: TcbVersion
    committed_tcb: TcbVersion
    firmware: tuple[int, int, int]
    csp_id: str
    created: str

    def to_json(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "product": self.product.value,
            "product_name": chain.PRODUCT_NAMES[self.product],
            "chip_id": self.chip_id.hex(),
            "current_tcb": _tcb_json(self.current_tcb),
            "reported_tcb": _tcb_json(self.reported_tcb),
            "committed_tcb": _tcb_json(self.committed_tcb),
            "firmware": {
                "major": self.firmware[0],
                "minor": self.firmware[1],
                "build": self.firmware[2],
            },
            "csp_id": self.csp_id,
            "created": self.created,
        }

    @classmethod
    def from_json(cls, doc: Any) -> _State:
        if not isinstance(doc, dict) or doc.get("format") != STATE_FORMAT:
            raise MalformedError(f"platform.json: not a {STATE_FORMAT} state")
        try:
            product = Product.parse(str(doc["product"]))
            chip_id = bytes.fromhex(str(doc["chip_id"]))
            fw = doc["firmware"]
            firmware = (int(fw["major"]), int(fw["minor"]), int(fw["build"]))
            csp_id = str(doc["csp_id"])
            created = str(doc["created"])
        except (KeyError, TypeError, ValueError) as exc:
            raise MalformedError(f"platform.json: {exc}") from exc
        if len(chip_id) != chain.CHIP_ID_SIZE:
            raise MalformedError("platform.json: CHIP_ID must be 64 bytes")
        return cls(
            product=product,
            chip_id=chip_id,
            current_tcb=_tcb_from_json(doc.get("current_tcb"), product),
            reported_tcb=_tcb_from_json(doc.get("reported_tcb"), product),
            committed_tcb=_tcb_from_json(doc.get("committed_tcb"), product),
            firmware=firmware,
            csp_id=csp_id,
            created=created,
        )


class SimulatedPlatform:
    """A simulated AMD secure processor backed by a state directory.

    Create or load it with :meth:`open` (or :meth:`create` / :meth:`load`).
    """

    def __init__(
        self,
        state_dir: Path,
        state: _State,
        *,
        ca_keys: dict[str, rsa.RSAPrivateKey],
        chip_seed: bytes,
        vlek_seed: bytes,
        ark: x509.Certificate,
        ask: x509.Certificate,
        asvk: x509.Certificate,
        vcek: x509.Certificate,
        vlek: x509.Certificate,
    ) -> None:
        self._dir = state_dir
        self._state = state
        # RSA-4096 private keys are loaded on first use (loading validates each key,
        # which is slow; reports need only the seeds).
        self._ca_keys = dict(ca_keys)
        self._chip_seed = chip_seed
        self._vlek_seed = vlek_seed
        self.ark = ark
        self.ask = ask
        self.asvk = asvk
        self.vcek = vcek
        self.vlek = vlek

    # -- creation and loading ------------------------------------------------------

    @classmethod
    def open(
        cls,
        state_dir: Path | str,
        product: Product | None = None,
        *,
        now: dt.datetime | None = None,
    ) -> SimulatedPlatform:
        """Load the platform in ``state_dir``, creating it (default Milan) when absent.

        When ``product`` is given and the directory holds another product, fail.
        """
        path = Path(state_dir)
        if (path / "platform.json").exists():
            platform = cls.load(path)
            if product is not None and product is not platform.product:
                raise MalformedError(
                    f"{path} holds a simulated {platform.product.value}, not {product.value}"
                )
            return platform
        return cls.create(path, product or Product.MILAN, now=now)

    @classmethod
    def create(
        cls,
        state_dir: Path | str,
        product: Product = Product.MILAN,
        *,
        now: dt.datetime | None = None,
        tcb: TcbVersion | None = None,
        csp_id: str = DEFAULT_CSP_ID,
    ) -> SimulatedPlatform:
        """Generate a new platform (keys, chain, CHIP_ID) in an empty or new directory."""
        path = Path(state_dir)
        if path.exists() and any(path.iterdir()):
            raise MalformedError(f"{path} is not empty; refusing to create a platform there")
        now = now or _utcnow()
        tcb = tcb or DEFAULT_TCB[product]
        # Turin VCEKs certify only the first 8 bytes of the CHIP_ID (hwID); the simulated
        # Turin chip reports those 8 bytes followed by zeros.
        if product is Product.TURIN:
            chip_id = secrets.token_bytes(chain.TURIN_HWID_SIZE).ljust(chain.CHIP_ID_SIZE, b"\0")
        else:
            chip_id = secrets.token_bytes(chain.CHIP_ID_SIZE)
        state = _State(
            product=product,
            chip_id=chip_id,
            current_tcb=tcb,
            reported_tcb=tcb,
            committed_tcb=tcb,
            firmware=FIRMWARE[product],
            csp_id=csp_id,
            created=now.isoformat(),
        )
        ark_key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
        ask_key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
        asvk_key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
        chip_seed = secrets.token_bytes(32)
        vlek_seed = secrets.token_bytes(32)
        ark = chain.issue_ark(product, ark_key, now)
        ask = chain.issue_intermediate(product, ask_key, ark_key, now)
        asvk = chain.issue_intermediate(product, asvk_key, ark_key, now, vlek=True)

        _mkdir_private(path)
        for sub in ("keys", "certs"):
            _mkdir_private(path / sub)
        keys = path / "keys"
        _write(keys / "ark.key.pem", _key_pem(ark_key), _KEY_MODE)
        _write(keys / "ask.key.pem", _key_pem(ask_key), _KEY_MODE)
        _write(keys / "asvk.key.pem", _key_pem(asvk_key), _KEY_MODE)
        _write(keys / "chip.seed", chip_seed, _KEY_MODE)
        _write(keys / "vlek.seed", vlek_seed, _KEY_MODE)
        certs = path / "certs"
        _write(certs / "ark.pem", _pem(ark), _PUB_MODE)
        _write(certs / "ask.pem", _pem(ask), _PUB_MODE)
        _write(certs / "asvk.pem", _pem(asvk), _PUB_MODE)
        _write(certs / "cert_chain.pem", _pem(ask) + _pem(ark), _PUB_MODE)
        _write(certs / "vlek_cert_chain.pem", _pem(asvk) + _pem(ark), _PUB_MODE)
        roots = path / "roots" / product.value.lower()
        roots.mkdir(parents=True, exist_ok=True)
        _write(roots / "ark.pem", _pem(ark), _PUB_MODE)
        _write(roots / "ask.pem", _pem(ask), _PUB_MODE)
        _write(roots / "asvk.pem", _pem(asvk), _PUB_MODE)
        vcek, vlek = _leaves(state, ask_key, asvk_key, chip_seed, vlek_seed, now=now)
        platform = cls(
            path,
            state,
            ca_keys={"ark": ark_key, "ask": ask_key, "asvk": asvk_key},
            chip_seed=chip_seed,
            vlek_seed=vlek_seed,
            ark=ark,
            ask=ask,
            asvk=asvk,
            vcek=vcek,
            vlek=vlek,
        )
        platform._write_leaves()
        # platform.json last: its presence marks a complete state directory.
        platform._save_state()
        return platform

    @classmethod
    def load(cls, state_dir: Path | str) -> SimulatedPlatform:
        """Load an existing platform, checking the secrets are private."""
        path = Path(state_dir)
        try:
            state = _State.from_json(json.loads((path / "platform.json").read_text()))
        except FileNotFoundError as exc:
            raise MalformedError(f"{path} holds no simulated platform") from exc
        except (OSError, ValueError) as exc:
            raise MalformedError(f"{path}/platform.json: {exc}") from exc
        keys = path / "keys"
        _check_private(path)
        _check_private(keys)
        names = ("ark.key.pem", "ask.key.pem", "asvk.key.pem", "chip.seed", "vlek.seed")
        for name in names:
            _check_private(keys / name)
        try:
            chip_seed = (keys / "chip.seed").read_bytes()
            vlek_seed = (keys / "vlek.seed").read_bytes()
            certs = path / "certs"
            ark = x509.load_pem_x509_certificate((certs / "ark.pem").read_bytes())
            ask = x509.load_pem_x509_certificate((certs / "ask.pem").read_bytes())
            asvk = x509.load_pem_x509_certificate((certs / "asvk.pem").read_bytes())
            vcek = x509.load_der_x509_certificate((certs / "vcek.der").read_bytes())
            vlek = x509.load_der_x509_certificate((certs / "vlek.der").read_bytes())
        except (OSError, ValueError) as exc:
            raise MalformedError(
                f"{path}: incomplete or damaged simulated platform: {exc}"
            ) from exc
        if len(chip_seed) != 32 or len(vlek_seed) != 32:
            raise MalformedError(f"{path}: damaged seeds")
        # The stored VCEK/VLEK must certify the keys derived for the reported TCB.
        tcb = state.reported_tcb
        if vcek.public_key() != _vcek_key(chip_seed, state.product, tcb).public_key():
            raise MalformedError(f"{path}/certs/vcek.der does not match the chip and TCB")
        if vlek.public_key() != _vlek_key(vlek_seed, state.product, tcb).public_key():
            raise MalformedError(f"{path}/certs/vlek.der does not match the VLEK seed and TCB")
        return cls(
            path,
            state,
            ca_keys={},
            chip_seed=chip_seed,
            vlek_seed=vlek_seed,
            ark=ark,
            ask=ask,
            asvk=asvk,
            vcek=vcek,
            vlek=vlek,
        )

    def _ca_key(self, name: str) -> rsa.RSAPrivateKey:
        """The ARK/ASK/ASVK private key, loaded on first use and matched to its cert."""
        if name not in self._ca_keys:
            path = self._dir / "keys" / f"{name}.key.pem"
            try:
                key = _load_rsa(path)
            except (OSError, ValueError) as exc:
                raise MalformedError(f"{path}: {exc}") from exc
            cert = {"ark": self.ark, "ask": self.ask, "asvk": self.asvk}[name]
            if key.public_key() != cert.public_key():
                raise MalformedError(f"{path} does not match certs/{name}.pem")
            self._ca_keys[name] = key
        return self._ca_keys[name]

    def _save_state(self) -> None:
        data = json.dumps(self._state.to_json(), indent=2).encode() + b"\n"
        _write(self._dir / "platform.json", data, _PUB_MODE)

    def _write_leaves(self) -> None:
        _write(self._dir / "certs" / "vcek.der", _der(self.vcek), _PUB_MODE)
        _write(self._dir / "certs" / "vlek.der", _der(self.vlek), _PUB_MODE)

    # -- properties ----------------------------------------------------------------

    @property
    def state_dir(self) -> Path:
        return self._dir

    @property
    def roots_dir(self) -> Path:
        """The directory to pass as ``--roots`` to trust this platform (explicitly)."""
        return self._dir / "roots"

    @property
    def product(self) -> Product:
        return self._state.product

    @property
    def chip_id(self) -> bytes:
        return self._state.chip_id

    @property
    def current_tcb(self) -> TcbVersion:
        return self._state.current_tcb

    @property
    def reported_tcb(self) -> TcbVersion:
        return self._state.reported_tcb

    @property
    def committed_tcb(self) -> TcbVersion:
        return self._state.committed_tcb

    @property
    def csp_id(self) -> str:
        return self._state.csp_id

    def chain_pem(self, *, vlek: bool = False) -> bytes:
        """ASK (or ASVK) then ARK, PEM: what AMD's KDS serves as ``cert_chain``."""
        return _pem(self.asvk if vlek else self.ask) + _pem(self.ark)

    def cert_table(self, *, vlek: bool = False) -> CertTable:
        """The extended-report certificate table a host would attach."""
        if vlek:
            return CertTable.from_named(
                vlek=_der(self.vlek), ask=_der(self.asvk), ark=_der(self.ark)
            )
        return CertTable.from_named(vcek=_der(self.vcek), ask=_der(self.ask), ark=_der(self.ark))

    # -- TCB and keys --------------------------------------------------------------

    def set_tcb(
        self,
        *,
        current: TcbVersion | None = None,
        reported: TcbVersion | None = None,
        committed: TcbVersion | None = None,
        now: dt.datetime | None = None,
    ) -> None:
        """Change the platform TCBs (persisted); the VCEK/VLEK follow the reported TCB."""
        s = self._state
        new = _State(
            product=s.product,
            chip_id=s.chip_id,
            current_tcb=current or s.current_tcb,
            reported_tcb=reported or s.reported_tcb,
            committed_tcb=committed or s.committed_tcb,
            firmware=s.firmware,
            csp_id=s.csp_id,
            created=s.created,
        )
        for tcb in (new.current_tcb, new.reported_tcb, new.committed_tcb):
            if (tcb.fmc is not None) != s.product.has_fmc:
                raise MalformedError(f"TCB {tcb} does not fit {s.product.value}")
        self._state = new
        self.vcek, self.vlek = _leaves(
            new,
            self._ca_key("ask"),
            self._ca_key("asvk"),
            self._chip_seed,
            self._vlek_seed,
            now=now or _utcnow(),
        )
        self._write_leaves()
        self._save_state()

    def _vcek_key(self, tcb: TcbVersion) -> ec.EllipticCurvePrivateKey:
        return _vcek_key(self._chip_seed, self.product, tcb)

    def _vlek_key(self, tcb: TcbVersion) -> ec.EllipticCurvePrivateKey:
        return _vlek_key(self._vlek_seed, self.product, tcb)

    def vcek_certificate(
        self, tcb: TcbVersion | None = None, *, now: dt.datetime | None = None
    ) -> x509.Certificate:
        """A VCEK certificate for ``tcb`` (default: the reported TCB), freshly issued."""
        identity = chain.ChipIdentity(self.product, self.chip_id, tcb or self.reported_tcb)
        key = self._vcek_key(identity.reported_tcb)
        return chain.issue_vcek(identity, key, self._ca_key("ask"), now or _utcnow())

    def vlek_certificate(
        self, tcb: TcbVersion | None = None, *, now: dt.datetime | None = None
    ) -> x509.Certificate:
        """A VLEK certificate for ``tcb`` (default: the reported TCB), freshly issued."""
        t = tcb or self.reported_tcb
        key = self._vlek_key(t)
        return chain.issue_vlek(
            self.product, t, key, self._ca_key("asvk"), now or _utcnow(), csp_id=self.csp_id
        )

    def crl(self, *, now: dt.datetime | None = None, revoked: tuple[int, ...] = ()) -> bytes:
        """A DER CRL signed by the simulated ARK, revoking the given serial numbers."""
        return chain.simulated_crl(
            self.product, self._ca_key("ark"), now or _utcnow(), revoked
        ).public_bytes(serialization.Encoding.DER)

    # -- guests and reports --------------------------------------------------------

    def launch(
        self,
        *,
        measurement: bytes | None = None,
        artifacts: LaunchArtifacts | None = None,
        host_data: bytes = bytes(32),
        policy: GuestPolicy | None = None,
        vlek: bool = False,
        version: int = 3,
        guest_svn: int = 0,
        family_id: bytes = bytes(16),
        image_id: bytes = bytes(16),
    ) -> SimulatedProvider:
        """Launch a guest: fix its MEASUREMENT (given, or computed from ``artifacts``),
        HOST_DATA, POLICY and report settings; returns its report provider."""
        if (measurement is None) == (artifacts is None):
            raise MalformedError("launch needs exactly one of measurement or artifacts")
        if artifacts is not None:
            measurement = launch_measurement(artifacts)
        assert measurement is not None
        if len(measurement) != 48:
            raise MalformedError(f"MEASUREMENT must be 48 bytes, got {len(measurement)}")
        if len(host_data) != 32:
            raise MalformedError(f"HOST_DATA must be 32 bytes, got {len(host_data)}")
        if version not in (2, 3, 5):
            raise MalformedError(f"report version {version} is not simulated (2, 3 or 5)")
        return SimulatedProvider(
            platform=self,
            measurement=bytes(measurement),
            host_data=bytes(host_data),
            policy=policy or GuestPolicy(smt=True),
            signing_key=SigningKey.VLEK if vlek else SigningKey.VCEK,
            version=version,
            guest_svn=guest_svn,
            family_id=bytes(family_id),
            image_id=bytes(image_id),
            launch_tcb=self.current_tcb,
            report_id=secrets.token_bytes(32),
            artifacts=artifacts,
        )

    def report(
        self,
        report_data: bytes,
        *,
        measurement: bytes | None = None,
        artifacts: LaunchArtifacts | None = None,
        host_data: bytes = bytes(32),
        policy: GuestPolicy | None = None,
        vmpl: int = 0,
        vlek: bool = False,
        version: int = 3,
        guest_svn: int = 0,
    ) -> bytes:
        """Launch a guest and return one signed report (0x4A0 bytes) for ``report_data``."""
        guest = self.launch(
            measurement=measurement,
            artifacts=artifacts,
            host_data=host_data,
            policy=policy,
            vlek=vlek,
            version=version,
            guest_svn=guest_svn,
        )
        return guest.report(report_data, vmpl=vmpl)

    def _sign(self, report: AttestationReport) -> AttestationReport:
        if report.signing_key is SigningKey.VLEK:
            key = self._vlek_key(report.reported_tcb)
        else:
            key = self._vcek_key(report.reported_tcb)
        der = key.sign(report.signed_bytes(), ec.ECDSA(hashes.SHA384()))
        r, s = decode_dss_signature(der)
        return report.with_signature(r, s)


def _vcek_key(seed: bytes, product: Product, tcb: TcbVersion) -> ec.EllipticCurvePrivateKey:
    return chain.derive_endorsement_key(seed, "vcek", product, tcb)


def _vlek_key(seed: bytes, product: Product, tcb: TcbVersion) -> ec.EllipticCurvePrivateKey:
    return chain.derive_endorsement_key(seed, "vlek", product, tcb)


def _leaves(
    state: _State,
    ask_key: rsa.RSAPrivateKey,
    asvk_key: rsa.RSAPrivateKey,
    chip_seed: bytes,
    vlek_seed: bytes,
    *,
    now: dt.datetime,
) -> tuple[x509.Certificate, x509.Certificate]:
    """VCEK and VLEK certificates for the state's reported TCB."""
    tcb = state.reported_tcb
    identity = chain.ChipIdentity(state.product, state.chip_id, tcb)
    vcek = chain.issue_vcek(identity, _vcek_key(chip_seed, state.product, tcb), ask_key, now)
    vlek = chain.issue_vlek(
        state.product,
        tcb,
        _vlek_key(vlek_seed, state.product, tcb),
        asvk_key,
        now,
        csp_id=state.csp_id,
    )
    return vcek, vlek


def _load_rsa(path: Path) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise MalformedError(f"{path}: not an RSA private key")
    return key


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulatedProvider:
    """A launched simulated guest; implements :class:`attestation.ReportProvider`.

    MEASUREMENT, HOST_DATA, POLICY, REPORT_ID and LAUNCH_TCB are fixed at launch; each
    :meth:`get_report` call supplies REPORT_DATA and the VMPL.
    """

    platform: SimulatedPlatform = field(repr=False)
    measurement: bytes
    host_data: bytes
    policy: GuestPolicy
    signing_key: SigningKey
    version: int
    guest_svn: int
    family_id: bytes
    image_id: bytes
    launch_tcb: TcbVersion
    report_id: bytes
    artifacts: LaunchArtifacts | None = None

    def attestation_report(self, report_data: bytes, vmpl: int = 0) -> AttestationReport:
        """The signed report as a model."""
        check_report_request(report_data, vmpl)
        p = self.platform
        s = p._state
        family, model, stepping = CPUID[p.product]
        unsigned = AttestationReport(
            product=p.product,
            version=self.version,
            guest_svn=self.guest_svn,
            policy=self.policy,
            family_id=self.family_id,
            image_id=self.image_id,
            vmpl=vmpl,
            current_tcb=s.current_tcb,
            # The simulated host's SMT setting follows the guest policy, so every launch
            # the policy allows succeeds.
            platform_info=PlatformInfo(smt_enabled=self.policy.smt),
            signing_key=self.signing_key,
            report_data=bytes(report_data),
            measurement=self.measurement,
            host_data=self.host_data,
            report_id=self.report_id,
            reported_tcb=s.reported_tcb,
            cpuid_fam_id=family if self.version >= 3 else None,
            cpuid_mod_id=model if self.version >= 3 else None,
            cpuid_step=stepping if self.version >= 3 else None,
            chip_id=s.chip_id,
            committed_tcb=s.committed_tcb,
            current_major=s.firmware[0],
            current_minor=s.firmware[1],
            current_build=s.firmware[2],
            committed_major=s.firmware[0],
            committed_minor=s.firmware[1],
            committed_build=s.firmware[2],
            launch_tcb=self.launch_tcb,
            launch_mit_vector=0 if self.version >= 5 else None,
            current_mit_vector=0 if self.version >= 5 else None,
        )
        return p._sign(unsigned)

    def report(self, report_data: bytes, vmpl: int = 0) -> bytes:
        """The signed report's 0x4A0 bytes."""
        return self.attestation_report(report_data, vmpl).to_bytes()

    def get_report(self, report_data: bytes, vmpl: int = 0) -> GuestReport:
        """:class:`ReportProvider`: the report plus the host's certificate table."""
        vlek = self.signing_key is SigningKey.VLEK
        return GuestReport(
            report=self.report(report_data, vmpl),
            certs=self.platform.cert_table(vlek=vlek),
            provider="simulated",
        )
