"""The orchestrator and the simulated farm are separate distributions that never depend on each other."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]

# Runs the orchestrator's command with the farm and its PSRP server library made unimportable, as in a
# virtualenv where only `pip install .` was run.
_WITHOUT_FARM = """
import sys
from importlib.abc import MetaPathFinder

class Absent(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("simfarm", "psrpcore"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Absent())
sys.argv[0] = "orchestrator"
from orchestrator.cli import main
main()
"""


def _orchestrator_without_farm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _WITHOUT_FARM, *args], capture_output=True, text=True, timeout=60, cwd=ROOT
    )


def test_the_orchestrator_works_without_the_farm() -> None:
    result = _orchestrator_without_farm("validate", "inventories/example.yaml")
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout


def test_sim_without_the_farm_says_how_to_install_it() -> None:
    result = _orchestrator_without_farm("sim", "--nodes", "1")
    assert result.returncode == 2
    assert "pip install ./simfarm" in result.stderr
    assert "Traceback" not in result.stderr


def _wheel(source: Path, parts: list[str], out: Path) -> zipfile.ZipFile:
    """Build from a copy of `parts` of `source`: a build writes into its tree; the checkout stays clean."""
    tree = out / "src"
    tree.mkdir(parents=True)
    for part in parts:
        if (source / part).is_dir():
            shutil.copytree(source / part, tree / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source / part, tree / part)
    pip = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"]
    subprocess.run([*pip, "-w", out, tree], check=True, capture_output=True, timeout=300)
    (wheel,) = out.glob("*.whl")
    return zipfile.ZipFile(wheel)


def _requires(wheel: zipfile.ZipFile) -> set[str]:
    (meta,) = (n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    headers = Parser().parsestr(wheel.read(meta).decode())
    return {
        r.split(";")[0].split(">")[0].split("<")[0].split("=")[0].split("[")[0].strip().lower()
        for r in headers.get_all("Requires-Dist") or []
        if "extra ==" not in r
    }


@pytest.mark.slow
def test_wheels_keep_the_distributions_apart(tmp_path: Path) -> None:
    core = _wheel(ROOT, ["pyproject.toml", "README.md", "orchestrator"], tmp_path / "core")
    farm = _wheel(ROOT / "simfarm", ["pyproject.toml", "simfarm"], tmp_path / "farm")
    core_files = {n.split("/")[0] for n in core.namelist()}
    farm_files = {n.split("/")[0] for n in farm.namelist()}
    assert "orchestrator" in core_files and "simfarm" not in core_files
    assert "simfarm" in farm_files and "orchestrator" not in farm_files
    core_needs, farm_needs = _requires(core), _requires(farm)
    assert "pypsrp" in core_needs
    assert not core_needs & {"psrpcore", "cryptography", "orchestrator-simfarm"}
    assert "psrpcore" in farm_needs
    assert not farm_needs & {"orchestrator", "pypsrp", "structlog", "typer"}
