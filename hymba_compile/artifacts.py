"""Compiled executables on disk: a user cache folder of entries keyed by what determines the
program, written atomically, verified before loading, rebuilt when corrupt or stale.

Key = sha256 over: the program spec (config, weight dtype, decode batches), the schedule variant
chosen per kernel family, the target, the versions of tvm, tvm-ffi, torch and this package, and
the source text of everything that generates the IR and the schedules (`ir/`, `schedules/`,
`hymba_compile/program*.py`). The sources stand in for the IR itself: printing the IR of the
1.5B program to hash it would cost seconds on every warm load, and the IR is a pure function of
those sources and the spec.

Entry layout: <cache>/<key>/program.so and manifest.json (key, sha256 and size of the .so,
what it was built from, compile seconds). An entry is written into a temporary folder beside it
and renamed into place, so a killed compile leaves no half entry under the key.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import tvm

from .errors import HymbaError
from .program import ProgramSpec, build_program

CACHE_ENV = "HYMBA_COMPILE_CACHE"
LIBRARY = "program.so"
MANIFEST = "manifest.json"
_ROOT = Path(__file__).resolve().parent.parent


def default_cache_dir() -> Path:
    """$HYMBA_COMPILE_CACHE, else $XDG_CACHE_HOME/hymba_compile, else ~/.cache/hymba_compile."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hymba_compile"


def _source_files() -> list[Path]:
    here = Path(__file__).resolve().parent
    files = sorted((_ROOT / "ir").glob("*.py")) + sorted((_ROOT / "schedules").rglob("*.py"))
    return files + sorted(here.glob("program*.py"))


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


def artifact_key(spec: ProgramSpec, target: str, variants: dict[str, str] | None = None) -> str:
    """The cache key of the executable for `spec` on `target` (named target, e.g. "cpu")."""
    import torch  # noqa: PLC0415 - only for its version

    from schedules import named_target  # noqa: PLC0415

    h = hashlib.sha256()
    parts = {
        "config": spec.config.to_dict(), "weight_dtype": spec.weight_dtype,
        "decode_batches": list(spec.decode_batches), "variants": sorted((variants or {}).items()),
        "target": str(named_target(target)), "tvm": tvm.__version__,
        "tvm_ffi": _version("apache-tvm-ffi"), "torch": torch.__version__,
        "package": _version("hymba-compile"),
    }
    h.update(json.dumps(parts, sort_keys=True, default=str).encode())
    for path in _source_files():
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:32]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class Artifact:
    """A verified cache entry."""

    path: Path  # the entry folder
    key: str
    compile_s: float  # seconds it took to build (when it was built)
    built_now: bool  # built by this call (cold) rather than loaded (warm)

    @property
    def library(self) -> Path:
        return self.path / LIBRARY


def verify(entry: Path, key: str) -> str | None:
    """None if the entry is complete and intact for `key`, else why not."""
    manifest_path, library = entry / MANIFEST, entry / LIBRARY
    if not manifest_path.is_file() or not library.is_file():
        return "incomplete entry"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as e:
        return f"unreadable manifest ({e})"
    if manifest.get("key") != key:
        return "manifest of another key"
    if library.stat().st_size != manifest.get("size") or _sha256(library) != manifest.get("sha256"):
        return "library does not match its recorded checksum"
    return None


def ensure_compiled(spec: ProgramSpec, target: str = "cpu", cache_dir: str | os.PathLike | None = None,
                    variants: dict[str, str] | None = None, progress: bool = True,
                    force: bool = False) -> Artifact:
    """The cached executable for (spec, target), compiling it first if it is missing, corrupt or
    `force`d. Prints why an entry is rebuilt; shows a progress bar while compiling."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    key = artifact_key(spec, target, variants)
    entry = root / key
    if entry.exists() and not force:
        problem = verify(entry, key)
        if problem is None:
            manifest = json.loads((entry / MANIFEST).read_text())
            return Artifact(entry, key, float(manifest.get("compile_s", 0.0)), built_now=False)
        if progress:
            print(f"hymba_compile: cached program {entry} is unusable ({problem}); rebuilding",
                  file=sys.stderr, flush=True)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise HymbaError(f"cannot create the compile cache folder {root}: {e}") from None
    return _compile_into(entry, key, spec, target, variants, progress)


def _compile_into(entry: Path, key: str, spec: ProgramSpec, target: str,
                  variants: dict[str, str] | None, progress: bool) -> Artifact:
    from tqdm import tqdm  # noqa: PLC0415

    from schedules import named_target  # noqa: PLC0415

    t0 = time.perf_counter()
    tgt = named_target(target)
    bar = tqdm(desc="scheduling kernels", unit=" kernel", disable=not progress, leave=False)
    try:
        mod, chosen = build_program(spec, tgt, variants, on_kernel=lambda _: bar.update())
    finally:
        bar.close()
    with tqdm(total=1, desc=f"compiling {len(chosen)} kernels with {tgt.kind.name}",
              disable=not progress, leave=False,
              bar_format="{desc}: {elapsed}") as bar:
        executable = tvm.compile(mod, target=tgt)
        bar.update()
    staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=entry.parent))
    try:
        library = staging / LIBRARY
        executable.export_library(str(library))
        compile_s = time.perf_counter() - t0
        manifest = {"key": key, "sha256": _sha256(library), "size": library.stat().st_size,
                    "target": str(tgt), "weight_dtype": spec.weight_dtype,
                    "decode_batches": list(spec.decode_batches), "kernels": chosen,
                    "config": spec.config.to_dict(), "compile_s": compile_s,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1, default=str))
        if entry.exists():  # a corrupt or stale entry (or a forced rebuild): replace it
            shutil.rmtree(entry)
        try:
            os.rename(staging, entry)
        except OSError:  # another process put a complete entry there meanwhile: use that one
            if verify(entry, key) is not None:
                raise
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if progress:
        print(f"hymba_compile: compiled {len(chosen)} kernels for {target} in {compile_s:.1f} s "
              f"-> {entry}", file=sys.stderr, flush=True)
    return Artifact(entry, key, compile_s, built_now=True)


def load_executable(artifact: Artifact) -> tvm.runtime.Module:
    return tvm.runtime.load_module(str(artifact.library))

