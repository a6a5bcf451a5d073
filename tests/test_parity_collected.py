"""tests/parity/ is collected by the normal pytest run, and each parity check skips with a reason naming the
environment variable it needs when that variable is unset."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_parity_checks_are_collected_and_skip_naming_their_environment_variable():
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWAPFORGE_GDINO")}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "tests/parity"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    assert "1 skipped" in out and "SWAPFORGE_GDINO_PYTHON" in out, out
