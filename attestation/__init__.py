"""PMC2 attestation: SEV-SNP evidence and the attestation service."""

__all__: list[str] = []
