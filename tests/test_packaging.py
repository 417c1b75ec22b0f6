"""Packaging: ``pip install -e .`` builds the project's metadata without a warning about
its license (setuptools deprecated ``license = {text = ...}``: it warned four times)."""

from __future__ import annotations

import subprocess
import sys
import tomllib

import pytest

from tests.servers import ROOT


def test_the_license_is_an_spdx_expression_setuptools_reads() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == "MIT"
    requires = project["build-system"]["requires"]
    assert "setuptools>=77" in requires  # the first setuptools that reads an SPDX string


@pytest.mark.slow
def test_an_editable_install_prints_no_license_warning(tmp_path) -> None:
    """The metadata is really built (in pip's isolated build environment); nothing is
    installed (``--dry-run``)."""
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--dry-run", "-e", str(ROOT)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "Would install grace" in output
    assert [line for line in output.splitlines() if "license" in line.lower()] == []
