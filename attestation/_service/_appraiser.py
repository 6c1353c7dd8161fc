"""Appraisal of enclave evidence at the attestation service.

Checklist of :meth:`Appraiser.appraise` (SEV-SNP ABI = AMD pub. 56860; KDS = AMD
pub. 57230; V1-V6 and A1-A5 are the evidence library's checklists in
``attestation._verify`` and ``attestation._appraise``):

E1. The endorsement certificate: the evidence's ``vcek`` or ``vlek`` (DER), else the one
    in its extended-report certificate table, else (VCEK only) fetched from AMD's KDS
    for the report's CHIP_ID and REPORTED_TCB through the configured ``KdsClient`` and
    its cache. A version-2 report names no product, so fetching its VCEK needs
    ``evidence.product``.
E2. The chain (ASK/ASVK then ARK): the evidence's ``cert_chain`` (PEM), else the
    certificate table's ASK and ARK, else the configured roots' intermediates, else
    fetched from KDS.
E3. Authenticity: ``verify_report`` (V1-V6) at the service's current time against the
    configured roots (AMD's pinned ARKs unless ``insecure_roots`` is configured).
E4. The binding: the expected REPORT_DATA is ``runtime_data_hash(nonce, public_key)``
    (``attestation._service._binding``).
E5. The appraisal options: the appraisal policy in force, with the registered reference
    values that are active (neither revoked nor expired) at the current time, and the
    expected REPORT_DATA (``AppraisalPolicy.appraisal_options``).
E6. Every failure of ``appraise`` (A1-A5: measurement, HOST_DATA, REPORT_DATA, TCB,
    debug, migration agent, SMT, VMPL, report version, guest SVN) is collected; the
    evidence is accepted only when there is none.

Malformed evidence raises ``ProblemError`` 400/422; inauthentic evidence ``ProblemError`` 403
``evidence-not-authentic``; a KDS failure ``ProblemError`` 502 ``kds-unavailable``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509

from attestation._abi import AttestationReport, SigningKey
from attestation._appraise import appraise
from attestation._certs import load_certificate, load_certificates
from attestation._certtable import CertTable
from attestation._errors import FetchError, MalformedError, VerificationError
from attestation._service._binding import b64url_decode, runtime_data_hash
from attestation._service._config import ServiceConfig
from attestation._service._problems import Fields, ProblemError
from attestation._service._store import Registration, Store
from attestation._types import Product
from attestation._verify import VerifiedReport, verify_report
from policies import AppraisalPolicy, LaunchConfiguration, PolicyError
from sealed import EnclavePublicKey

__all__ = ["TRUST_VECTOR_KEYS", "Appraisal", "Appraiser", "Evidence"]

MAX_REPORT = 4096
MAX_CERT = 8192
MAX_CHAIN_TEXT = 32768
EVIDENCE_MEMBERS = ("report", "vcek", "vlek", "cert_chain", "cert_table", "product")
TRUST_VECTOR_KEYS = (
    "instance-identity",
    "configuration",
    "executables",
    "hardware",
    "runtime-opaque",
)


@dataclass(frozen=True)
class Evidence:
    """The evidence an enclave (or a client) submits."""

    report: bytes
    leaf: bytes | None = None
    leaf_kind: str | None = None
    chain_pem: bytes | None = None
    cert_table: CertTable | None = None
    product: Product | None = None

    @classmethod
    def from_fields(cls, f: Fields) -> Evidence:
        """From the ``evidence`` member of a request (strict; see docs in the app)."""
        try:
            report = b64url_decode(f.string("report"), f.path("report"), max_size=MAX_REPORT)
            leaf: bytes | None = None
            kind: str | None = None
            for name in ("vcek", "vlek"):
                text = f.opt_string(name, max_length=MAX_CERT * 2)
                if text is None:
                    continue
                if leaf is not None:
                    raise f.error(name, "give either vcek or vlek, not both")
                leaf = b64url_decode(text, f.path(name), max_size=MAX_CERT)
                kind = name
            chain_text = f.opt_string("cert_chain", max_length=MAX_CHAIN_TEXT)
            if chain_text is not None and not chain_text.isascii():
                raise f.error("cert_chain", "must be ASCII PEM text")
            table_text = f.opt_string("cert_table", max_length=MAX_CHAIN_TEXT)
            table = None
            if table_text is not None:
                raw = b64url_decode(table_text, f.path("cert_table"), max_size=MAX_CHAIN_TEXT)
                table = CertTable.from_bytes(raw)
            product_text = f.opt_string("product", max_length=32)
            product = Product.parse(product_text) if product_text is not None else None
        except MalformedError as exc:
            raise ProblemError(400, "malformed-evidence", str(exc)) from None
        return cls(
            report=report,
            leaf=leaf,
            leaf_kind=kind,
            chain_pem=None if chain_text is None else chain_text.encode("ascii"),
            cert_table=table,
            product=product,
        )


@dataclass(frozen=True)
class Appraisal:
    """The outcome of E1-E6 for authentic evidence (``failures`` empty: accepted)."""

    verified: VerifiedReport
    public_key: EnclavePublicKey
    nonce: bytes
    failures: tuple[str, ...]
    policy: AppraisalPolicy
    registration: Registration | None
    at: datetime

    @property
    def accepted(self) -> bool:
        return not self.failures

    @property
    def report(self) -> AttestationReport:
        return self.verified.report

    def trust_vector(self) -> dict[str, int]:
        """AR4SI claims for accepted evidence (``hardware`` 32 for a non-AMD root)."""
        return {
            "instance-identity": 2,
            "configuration": 2,
            "executables": 3,
            "hardware": 2 if self.verified.amd_root else 32,
            "runtime-opaque": 2,
        }

    def launch_config(self) -> dict[str, Any] | None:
        """The registered launch configuration (its digest is HOST_DATA), when known."""
        reg = self.registration
        if reg is None or reg.launch_config is None:
            return None
        try:
            config = LaunchConfiguration.from_toml(reg.launch_config)
            digest = config.digest()
        except PolicyError:
            return None
        if digest != self.report.host_data:
            return None
        out: dict[str, Any] = {
            "digest": digest.hex(),
            "egress_policy_digest": config.egress_policy_digest.hex(),
            "peers": dict(config.peers.to_dict()),
        }
        if config.model_bundle_digest is not None:
            out["model_bundle_digest"] = config.model_bundle_digest
        return out


class Appraiser:
    """Runs E1-E6 with the service's roots, KDS client, store and policy."""

    def __init__(self, config: ServiceConfig, store: Store) -> None:
        self._config = config
        self._store = store
        self._roots = config.roots

    # E1, E2 -------------------------------------------------------------------------

    def _peek(self, evidence: Evidence) -> AttestationReport:
        raw = evidence.report
        version = AttestationReport.peek_version(raw)
        product = evidence.product
        if version == 2 and product is None:
            raise ProblemError(
                422,
                "malformed-evidence",
                "a version-2 report names no product: give evidence.product or the VCEK",
            )
        return AttestationReport.from_bytes(raw, product if version == 2 else None)

    def _leaf(self, evidence: Evidence) -> x509.Certificate:
        if evidence.leaf is not None:
            return load_certificate(evidence.leaf)
        table = evidence.cert_table
        if table is not None:
            for der in (table.vcek, table.vlek):
                if der is not None:
                    return load_certificate(der)
        report = self._peek(evidence)
        if report.signing_key is not SigningKey.VCEK:
            raise ProblemError(
                422,
                "malformed-evidence",
                "the report is signed by a VLEK: the evidence must carry the VLEK certificate",
            )
        kds = self._config.kds
        if kds is None:
            raise ProblemError(
                422,
                "malformed-evidence",
                "the evidence carries no VCEK and this service does not fetch from AMD KDS",
            )
        try:
            der = kds.vcek(report.product, report.chip_id, report.reported_tcb)
        except FetchError as exc:
            raise ProblemError(502, "kds-unavailable", str(exc)) from None
        return load_certificate(der)

    def _chain(
        self, evidence: Evidence, product: Product, kind: str
    ) -> list[x509.Certificate] | None:
        if evidence.chain_pem is not None:
            return load_certificates(evidence.chain_pem)
        table = evidence.cert_table
        if table is not None and table.ask is not None:
            certs = [load_certificate(table.ask)]
            if table.ark is not None:
                certs.append(load_certificate(table.ark))
            return certs
        if self._roots.intermediates:
            return None
        kds = self._config.kds
        if kds is None:
            raise ProblemError(
                422,
                "malformed-evidence",
                "the evidence carries no certificate chain and this service does not "
                "fetch from AMD KDS",
            )
        try:
            chain = kds.cert_chain(product, "vlek" if kind == "vlek" else "vcek")
        except FetchError as exc:
            raise ProblemError(502, "kds-unavailable", str(exc)) from None
        return [chain.intermediate, chain.ark]

    # E1-E6 --------------------------------------------------------------------------

    def appraise(
        self,
        evidence: Evidence,
        *,
        nonce: bytes,
        public_key: EnclavePublicKey,
        policy: AppraisalPolicy,
        at: datetime,
    ) -> Appraisal:
        try:
            leaf = self._leaf(evidence)  # E1
            product = evidence.product
            if product is None:
                product = self._peek_product(evidence, leaf)
            parsed = AttestationReport.from_bytes(
                evidence.report,
                product if AttestationReport.peek_version(evidence.report) == 2 else None,
            )
            kind = "vlek" if parsed.signing_key is SigningKey.VLEK else "vcek"
            chain = self._chain(evidence, product, kind)  # E2
            verified = verify_report(  # E3
                evidence.report,
                leaf,
                chain,
                at=at,
                roots=self._roots,
                product=evidence.product,
            )
        except MalformedError as exc:
            raise ProblemError(422, "malformed-evidence", str(exc)) from None
        except VerificationError as exc:
            raise ProblemError(
                403, "evidence-not-authentic", str(exc), ear_status="contraindicated"
            ) from None
        report = verified.report
        expected = runtime_data_hash(nonce, public_key)  # E4
        now = at.timestamp()
        active = self._store.active_reference_values(now)  # E5
        values = [reg.reference_value for reg in active]
        options = policy.appraisal_options(
            values,
            measurement=report.measurement,
            host_data=report.host_data,
            report_data=expected,
        )
        failures = appraise(report, options)  # E6
        if report.report_data != expected:
            failures.append(
                "REPORT_DATA does not bind the nonce and the enclave public key "
                "(expected SHA-384 of the canonical runtime data, zero-padded)"
            )
        registration = None
        match = policy.match_reference_value(report.measurement, report.host_data, values)
        if match is not None:
            registration = next((r for r in active if r.reference_value == match), None)
        elif not failures:
            failures.append("no accepted reference value matches MEASUREMENT and HOST_DATA")
        return Appraisal(
            verified=verified,
            public_key=public_key,
            nonce=nonce,
            failures=tuple(dict.fromkeys(failures)),
            policy=policy,
            registration=registration,
            at=at,
        )

    @staticmethod
    def _peek_product(evidence: Evidence, leaf: x509.Certificate) -> Product:
        from attestation._certs import parse_endorsement_extensions

        version = AttestationReport.peek_version(evidence.report)
        if version == 2:
            return parse_endorsement_extensions(leaf).product
        return AttestationReport.from_bytes(evidence.report).product
