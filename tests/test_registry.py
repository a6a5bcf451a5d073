"""Registry metadata: pyproject.toml's dependencies are requirements.txt's, [tool.comfy] is filled in, and
`comfy node validate` (comfy-cli, optional) passes with no warning."""
import os
import shutil
import subprocess
import tomllib

import pytest

from tools import dependencies

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_pyproject_lists_exactly_the_requirements():
    assert dependencies.drift() == [], "run python -m tools.dependencies --write"
    assert "anny>=0.6.2,<0.7" in dependencies.read_pyproject()


def test_drift_is_reported_for_a_missing_or_extra_dependency(tmp_path):
    req = tmp_path / "requirements.txt"
    req.write_text("# a comment\nnumpy >= 1.24   # inline comment\n\ntransformers>=4.40\n")
    py = tmp_path / "pyproject.toml"
    py.write_text('[project]\nname = "x"\ndependencies = [\n    "numpy>=1.24",\n]\n')
    assert dependencies.drift(str(req), str(py)) == ["only in requirements.txt: transformers>=4.40"]
    dependencies.write_pyproject(dependencies.read_requirements(str(req)), str(py))
    assert dependencies.drift(str(req), str(py)) == []
    assert tomllib.loads(py.read_text())["project"]["name"] == "x"  # the rest of the file is kept


def test_tool_comfy_is_complete():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        data = tomllib.load(f)
    comfy = data["tool"]["comfy"]
    assert comfy["PublisherId"] and comfy["DisplayName"]
    assert comfy["requires-comfyui"] == ">=0.3.64"  # the oldest ComfyUI the e2e tests ran on
    assert isinstance(comfy["includes"], list)
    for inc in comfy["includes"]:
        assert os.path.exists(os.path.join(ROOT, inc)), inc


def _comfy_cli():
    exe = os.environ.get("SWAPFORGE_COMFY_CLI") or shutil.which("comfy")
    return exe if exe and os.path.isfile(exe) else None


@pytest.mark.skipif(_comfy_cli() is None, reason="comfy-cli not installed (pip install comfy-cli into any venv "
                                                 "and set SWAPFORGE_COMFY_CLI to its `comfy`)")
def test_comfy_node_validate_passes_without_warnings():
    r = subprocess.run([_comfy_cli(), "--skip-prompt", "--no-enable-telemetry", "node", "validate"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "All validation checks passed successfully" in out, out
    assert "warning" not in out.lower(), out


@pytest.mark.skipif(_comfy_cli() is None, reason="comfy-cli not installed")
def test_ruff_security_rules_of_comfy_node_validate_are_clean():
    # comfy-cli runs `python -m ruff` with its own interpreter and reports success when ruff is missing, so
    # run the same rules here and require ruff to be there
    python = os.path.join(os.path.dirname(_comfy_cli()), "python")
    r = subprocess.run([python, "-m", "ruff", "check", ".", "--select", "S102,S307,E702"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "All checks passed" in r.stdout, r.stdout
