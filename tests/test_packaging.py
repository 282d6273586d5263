"""The installed package: ir/ and schedules/ install as hymba_compile.ir and
hymba_compile.schedules, never as top-level `ir` / `schedules` modules."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_folder_is_declared_under_the_namespace():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    declared = set(config["packages"])
    mapping = {"hymba_compile": "hymba_compile", **config["package-dir"]}
    found = set()
    for name, folder in mapping.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join([name, *rel.parts]))
    assert all(p.startswith("hymba_compile") for p in declared)
    assert found - declared == set(), "package folders missing from pyproject's packages"


def test_no_top_level_ir_or_schedules_outside_the_repo(tmp_path):
    code = ("import importlib.util as u, hymba_compile.ir as i, hymba_compile.schedules as s; "
            "print(u.find_spec('ir'), u.find_spec('schedules'), i.__name__, s.__name__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == ["None", "None", "hymba_compile.ir", "hymba_compile.schedules"]
