"""Shared test helpers: where ../shared is, and skips that say why when it is absent."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HYMBA_SHARED", REPO.parent / "shared"))
FIXTURE_DIR = SHARED / "fixtures" / "official-tiny"
OFFICIAL_CONFIG_DIR = SHARED / "hymba-1.5b-base"

needs_fixture = pytest.mark.skipif(
    not (FIXTURE_DIR / "expected.safetensors").is_file(),
    reason=f"official fixture not found at {FIXTURE_DIR} (clone ../shared beside the repo or set HYMBA_SHARED)")
needs_official_config = pytest.mark.skipif(
    not (OFFICIAL_CONFIG_DIR / "config.json").is_file(),
    reason=f"official Hymba-1.5B config not found at {OFFICIAL_CONFIG_DIR} (set HYMBA_SHARED)")


def pytest_configure(config):
    """Compiled programs go to a cache folder of this test session (unless HYMBA_COMPILE_CACHE is
    set), so tests never depend on, or write into, the user's cache."""
    import shutil
    import tempfile

    if not os.environ.get("HYMBA_COMPILE_CACHE"):
        folder = tempfile.mkdtemp(prefix="hymba-test-cache-")
        os.environ["HYMBA_COMPILE_CACHE"] = folder
        config.add_cleanup(lambda: shutil.rmtree(folder, ignore_errors=True))


def run_cli(capsys, *argv):
    """`python -m hymba_compile` in-process -> (exit status, stdout, stderr)."""
    from hymba_compile.__main__ import main

    try:
        code = main(list(argv))
    except SystemExit as e:  # argparse usage errors
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err
