"""The command line's own flags (each command's arguments are in tests/bad_inputs.yaml and the commands' tests)."""
import subprocess
import sys
from importlib.metadata import version

import pytest


def test_version_prints_the_installed_packages_version():
    from router.cli import main

    installed = version("ensemble-router")  # what pyproject.toml says, as pip installed it
    done = subprocess.run([sys.executable, "-m", "router.cli", "--version"], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout.strip()) == (0, f"router {installed}")
    with pytest.raises(SystemExit) as ended:
        main(["--version"])
    assert ended.value.code == 0


def test_the_http_api_carries_the_same_version():
    from router.serving.http_api import api

    assert api.version == version("ensemble-router")  # what /openapi.json says
