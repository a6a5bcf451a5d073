"""Nothing in the pack unpickles code: every torch.load is weights_only=True, no np.load allows pickles, no
pickle.load; files that carry a code-running pickle are refused without running it, and the refusal never
advises loading with weights_only=False."""
import ast
import os

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAG = "SWAPFORGE_TEST_PICKLE_RAN"


class CodeRunningPickle:
    """Unpickling this object runs code (it sets an environment variable): what a malicious file would do."""

    def __reduce__(self):
        return (exec, (f"import os; os.environ[{FLAG!r}] = '1'",))


@pytest.fixture(autouse=True)
def _no_flag(monkeypatch):
    monkeypatch.delenv(FLAG, raising=False)
    yield
    assert FLAG not in os.environ, "a pickle in a test file was executed"


def _python_files():
    skip = {".git", ".venv", "node_modules", "__pycache__"}
    for dirpath, dirnames, files in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if d not in skip]
        for f in files:
            if f.endswith(".py"):
                yield os.path.join(dirpath, f)


def _kw(call, name):
    for k in call.keywords:
        if k.arg == name:
            return k.value
    return None


def test_every_torch_load_is_weights_only_and_no_numpy_or_plain_pickle_load_allows_pickles():
    bad = []
    for path in _python_files():
        rel = os.path.relpath(path, ROOT)
        if rel == os.path.join("tests", "test_no_pickle_code.py"):
            continue
        tree = ast.parse(open(path, encoding="utf-8").read(), rel)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            owner = node.func.value.id if isinstance(node.func.value, ast.Name) else None
            where = f"{rel}:{node.lineno}"
            if owner == "torch" and node.func.attr == "load":
                wo = _kw(node, "weights_only")
                if not (isinstance(wo, ast.Constant) and wo.value is True):
                    bad.append(f"{where}: torch.load without weights_only=True")
            if owner == "np" and node.func.attr == "load":
                ap = _kw(node, "allow_pickle")
                if ap is not None and not (isinstance(ap, ast.Constant) and ap.value is False):
                    bad.append(f"{where}: np.load with allow_pickle")
            if owner == "pickle" and node.func.attr in ("load", "loads", "Unpickler"):
                bad.append(f"{where}: pickle.{node.func.attr}")
    assert bad == []


def test_a_fap_bin_whose_pickle_runs_code_is_refused_without_running_it_or_advising_weights_only_false(tmp_path):
    from models.fuseanypart.checkpoints import FapCheckpointError, load_fap_state

    path = tmp_path / "fap.bin"
    torch.save({"unet": {"conv_in.weight": torch.zeros(1)}, "image_proj2": {}, "x": CodeRunningPickle()}, path)
    with pytest.raises(FapCheckpointError) as e:
        load_fap_state(str(path))
    msg = str(e.value)
    assert FLAG not in os.environ
    assert "weights_only" not in msg and "safe_globals" not in msg
    assert "exec" in msg and "fap.bin" in msg


def test_safe_loader_reads_plain_checkpoints_and_every_sanitised_message_drops_torchs_advice(tmp_path):
    from models.safe_load import UnsafeCheckpointError, load_torch_file, safe_error_text

    plain = tmp_path / "plain.pt"
    torch.save({"w": torch.arange(3), "step": 7, "names": ["a"], "rng": (1, (2, 3), None)}, plain)
    got = load_torch_file(str(plain))
    assert torch.equal(got["w"], torch.arange(3)) and got["step"] == 7 and got["rng"] == (1, (2, 3), None)
    bad = tmp_path / "bad.pt"
    torch.save([CodeRunningPickle()], bad)
    with pytest.raises(UnsafeCheckpointError) as e:
        load_torch_file(str(bad))
    assert "weights_only" not in str(e.value) and "exec" in str(e.value)
    try:
        torch.load(str(bad), weights_only=True)
    except Exception as exc:  # torch's own text carries the advice; ours must not
        assert "weights_only" in str(exc) and "weights_only" not in safe_error_text(exc)


def test_smplx_arrays_are_read_without_unpickling_the_files_object_entries(tmp_path):
    from models.gswap import body

    arrays = body.synthetic_smplx_arrays()
    path = tmp_path / "SMPLX_NEUTRAL.npz"
    trap = np.empty(1, dtype=object)
    trap[0] = CodeRunningPickle()
    np.savez(path, joint2num=trap, **arrays)   # the official file has pickled dict entries like this one
    got = body.read_smplx_arrays(str(path))
    assert FLAG not in os.environ
    assert "joint2num" not in got and set(arrays) <= set(got)
    np.testing.assert_array_equal(got["v_template"], arrays["v_template"])
    np.savez(tmp_path / "bare.npz", f=arrays["f"])
    with pytest.raises(ValueError, match="SMPLX_NEUTRAL.npz.*licence"):
        body.read_smplx_arrays(str(tmp_path / "bare.npz"))
