from __future__ import annotations

import pytest

from pmc2.cli import main


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert "pmc2" in capsys.readouterr().out


def test_no_command_is_usage_error() -> None:
    assert main([]) == 2
