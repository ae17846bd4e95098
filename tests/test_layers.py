"""The layering contracts (import-linter, in pyproject.toml) hold, and a broken arrow fails them."""
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT = Path(sys.executable).with_name("lint-imports")


def lint(tree: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT), "--no-cache"], cwd=tree, capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tree)})


def test_the_contracts_hold():
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "5 kept, 0 broken" in result.stdout


def test_a_broken_arrow_fails_the_contracts(tmp_path):
    for part in ("router", "models"):
        shutil.copytree(ROOT / part, tmp_path / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    with open(tmp_path / "router" / "decision.py", "a") as fh:
        fh.write("\nimport ray  # the decision must know no Ray\n")
    with open(tmp_path / "models" / "catalogue.py", "a") as fh:
        fh.write("\nimport router.policy  # models must know no routing\n")
    result = lint(tmp_path)
    assert result.returncode != 0
    assert "The decision is pure: no I/O runtimes BROKEN" in result.stdout
    assert "router.decision is not allowed to import ray" in result.stdout
    assert "Models know no routing BROKEN" in result.stdout
    assert "The offline wing uses the core, never the serving shell KEPT" in result.stdout
