"""PMC2: an attested confidential-inference gateway with key release.

This package holds the ``pmc2`` command line; the capabilities live in the
top-level packages named in DESIGN.md (``attestation``, ``policies``, ...).
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
