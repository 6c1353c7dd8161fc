"""Shared fixtures: locating ``../shared`` (datasets and test vectors).

Material from ``../shared`` is required in CI: when ``CI=true`` a missing file fails
the test instead of skipping it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


def require_shared(relative: str) -> Path:
    """Return ``../shared/<relative>``; fail under CI, skip elsewhere, when missing."""
    path = SHARED / relative
    if not path.exists():
        message = f"shared material missing: ../shared/{relative}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
def snp_vectors() -> Path:
    """The directory of real SEV-SNP test vectors."""
    return require_shared("testvectors/sev-snp")


@pytest.fixture
def cifar10_dir() -> Path:
    """The directory holding the CIFAR-10 archives."""
    return require_shared("datasets/cifar10")
