"""Command-line argument handling that needs no server."""

from __future__ import annotations

import pytest

from gradesync.sandbox.cli import build_parser, main


def test_unknown_fault_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--fault", "gremlins=1"]) == 2
    assert "unknown fault" in capsys.readouterr().err


def test_defaults_match_the_documented_local_setup() -> None:
    args = build_parser().parse_args([])
    assert (args.api, args.preset, args.host, args.port, args.max_limit) == ("1.2", "tiny", "127.0.0.1", 8000, 50_000)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--preset", "galaxy"])
