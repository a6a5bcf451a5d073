"""requirements.txt is the one list of the pack's dependencies; pyproject.toml's [project] dependencies are
written from it (the Comfy registry reads pyproject, ComfyUI-Manager and users install requirements.txt).

    python -m tools.dependencies          # exit 1 and show the difference when pyproject.toml has drifted
    python -m tools.dependencies --write  # rewrite pyproject.toml's dependencies from requirements.txt

tests/test_pack.py runs the check, so the two cannot drift apart unnoticed.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import tomllib
from typing import List

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REQUIREMENTS = os.path.join(REPO_ROOT, "requirements.txt")
PYPROJECT = os.path.join(REPO_ROOT, "pyproject.toml")
_BLOCK = re.compile(r"^dependencies = \[\n.*?^\]\n", re.S | re.M)


def read_requirements(path: str = REQUIREMENTS) -> List[str]:
    """The requirement lines, comments and blank lines dropped, inner whitespace removed."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            if line.startswith("-"):
                raise ValueError(f"{path}: pip option {line!r} cannot go into pyproject.toml; list packages only")
            out.append("".join(line.split()))
    return out


def read_pyproject(path: str = PYPROJECT) -> List[str]:
    with open(path, "rb") as f:
        return ["".join(d.split()) for d in tomllib.load(f)["project"].get("dependencies", [])]


def render_block(deps: List[str]) -> str:
    return "dependencies = [\n" + "".join(f'    "{d}",\n' for d in deps) + "]\n"


def write_pyproject(deps: List[str], path: str = PYPROJECT) -> None:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if not _BLOCK.search(text):
        raise ValueError(f"{path}: no 'dependencies = [' block (one entry per line, closing ']' alone) found")
    with open(path, "w", encoding="utf-8") as f:
        f.write(_BLOCK.sub(lambda _: render_block(deps), text, count=1))


def drift(requirements: str = REQUIREMENTS, pyproject: str = PYPROJECT) -> List[str]:
    """Lines saying how pyproject.toml differs from requirements.txt ([] when they agree, order included)."""
    req, py = read_requirements(requirements), read_pyproject(pyproject)
    if req == py:
        return []
    lines = [f"only in requirements.txt: {d}" for d in req if d not in py]
    lines += [f"only in pyproject.toml: {d}" for d in py if d not in req]
    return lines or ["same entries in another order"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.dependencies", description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="rewrite pyproject.toml from requirements.txt")
    args = ap.parse_args(argv)
    if args.write:
        write_pyproject(read_requirements())
        print(f"wrote {len(read_requirements())} dependencies into {PYPROJECT}")
        return 0
    problems = drift()
    for p in problems:
        print(p)
    if problems:
        print("pyproject.toml has drifted from requirements.txt: run python -m tools.dependencies --write")
        return 1
    print("pyproject.toml and requirements.txt list the same dependencies")
    return 0


if __name__ == "__main__":
    sys.exit(main())
