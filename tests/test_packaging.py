"""Dependencies a user's cluster can install: ranges in pyproject.toml, the tested set in
constraints.txt (what `make setup` installs), and every imported package declared.

What these checks cannot do is run pip against another torch; that was done by hand (a venv holding
torch 2.13.0+cpu / torchvision 0.28.0 / torchaudio 2.11.1: `pip install .` kept all three, while the
exact pins before this change would have installed torch 2.11.0 over them).
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
RUNTIME = {Requirement(r).name: Requirement(r) for r in PROJECT["dependencies"]}
EXTRAS = {name: {Requirement(r).name: Requirement(r) for r in reqs}
          for name, reqs in PROJECT["optional-dependencies"].items()}
DECLARED = {**{n: r for extra in EXTRAS.values() for n, r in extra.items()}, **RUNTIME}
CONSTRAINTS = {Requirement(line).name: Requirement(line) for line in (REPO / "constraints.txt").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
# Import name -> distribution, where they differ.
DISTRIBUTION = {"PIL": "pillow", "sklearn": "scikit-learn", "ffmpeg": "ffmpeg-python", "nvidia": "nvidia-dali-cuda130"}


def test_runtime_dependencies_are_ranges_not_pins():
    pinned = [str(r) for r in RUNTIME.values() if any(s.operator in ("==", "===") for s in r.specifier)]
    assert not pinned, f"exact pins replace a cluster's own packages: {pinned}"


@pytest.mark.parametrize("name, versions", [
    ("torch", ["2.4.0", "2.9.1", "2.11.0", "2.13.0"]),        # 2.13.0: the by-hand install beside a cluster torch
    ("torchvision", ["0.19.0", "0.24.1", "0.26.0", "0.28.0"]),
    ("torchaudio", ["2.4.0", "2.9.1", "2.11.0", "2.11.1"]),
    ("webdataset", ["0.2.100", "1.0.2"]),
])
def test_ranges_admit_other_releases_of_the_same_major(name, versions):
    assert all(RUNTIME[name].specifier.contains(Version(v)) for v in versions), RUNTIME[name]
    assert not RUNTIME[name].specifier.contains(Version("3.0.0" if name != "torchvision" else "1.0.0"))


def test_constraints_pin_a_tested_set_inside_the_ranges():
    assert {"torch", "torchvision", "torchaudio", "webdataset", "braceexpand"} <= set(CONSTRAINTS)
    for name, pin in CONSTRAINTS.items():
        (op, version), = [(s.operator, s.version) for s in pin.specifier]
        assert op == "==", pin
        if name in DECLARED:
            assert DECLARED[name].specifier.contains(Version(version)), f"{pin} is outside {DECLARED[name]}"


def test_setup_installs_with_the_constraints():
    setup = (REPO / "tools" / "setup.sh").read_text()
    installs = [line for line in setup.splitlines() if re.search(r"pip\" install .*(torch|-e)", line)]
    assert installs and all("-c constraints.txt" in line for line in installs)
    assert "constraints.txt" in re.search(r"STAMP=.*", setup).group(0)   # a changed pin reinstalls
    assert "tools/setup.sh" in (REPO / "Makefile").read_text()


def _imported_distributions() -> set[str]:
    found = set()
    for path in [*(REPO / "avshards").rglob("*.py"), *(REPO / "crisscross").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    top = found - set(sys.stdlib_module_names) - {"avshards", "crisscross"}
    return {DISTRIBUTION.get(name, name).lower().replace("_", "-") for name in top}


def test_every_imported_package_is_declared():
    """A package imported directly must be declared, not arrive through another (braceexpand did)."""
    declared = {name.lower().replace("_", "-") for name in DECLARED}
    imported = _imported_distributions()
    assert {"braceexpand", "ffmpeg-python", "torch", "fsspec"} <= imported      # the scan sees the code
    assert imported <= declared, f"imported but not declared in pyproject.toml: {sorted(imported - declared)}"


def test_each_fsspec_scheme_has_its_extra():
    from avshards.remote import FSSPEC_PACKAGES

    for scheme, (package, extra) in FSSPEC_PACKAGES.items():
        assert package.replace("_", "-") in {n.replace("_", "-") for n in EXTRAS[extra]}, (scheme, extra)
        assert package.replace("_", "-") in {n.replace("_", "-") for n in EXTRAS["cloud"]}
