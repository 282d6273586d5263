"""Compiled executables on disk: a user cache folder of entries keyed by what determines the
program, written atomically, verified before loading, rebuilt when corrupt or stale.

Key = sha256 over: the program spec (config, weight dtype, decode batches), the schedule variant
chosen per kernel family, the target, the versions of tvm, tvm-ffi, torch and this package, and
the source text of everything that generates the IR, the schedules and the library (`ir/`,
`schedules/`, `hymba_compile/program*.py`, the Relax pipeline, the nvcc call and the export).
The sources stand in for the IR itself: printing the IR of the 1.5B program to hash it would
cost seconds on every warm load, and the IR is a pure function of those sources and the spec.

Entry layout: <cache>/<key>/program.so and manifest.json (key, sha256 and size of the .so,
what it was built from, compile seconds, per kernel its schedule variant and launches, on CUDA
its registers / shared memory / spills from ptxas, the launches of each function). An entry is
written into a temporary folder beside it and renamed into place, so a killed compile leaves no
half entry under the key.

CUDA entries (target cuda:sm_XX) hold the device code as an nvcc fatbin for that arch
(`cuda_export`): loading needs neither nvcc nor NVRTC. `find_prebuilt` finds an entry without
computing the key (which needs TVM's compiler for the target): by the spec, source and version
digests recorded in manifests; the runtime-only load path uses it. This module imports the
compiler lazily, only to compile.
"""

from __future__ import annotations

import hashlib
import importlib.util
import importlib
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

from .choices import TUNED, Choice, choices_key, choices_path, read_choices, tuned_dir
from .errors import HymbaError
from .program_spec import ProgramSpec
from .targets import is_cpu_target

CACHE_ENV = "HYMBA_COMPILE_CACHE"
LIBRARY = "program.so"
MANIFEST = "manifest.json"


def default_cache_dir() -> Path:
    """$HYMBA_COMPILE_CACHE, else $XDG_CACHE_HOME/hymba_compile, else ~/.cache/hymba_compile."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hymba_compile"


def _source_files() -> list[Path]:
    # found, not imported (the runtime-only TVM cannot import the schedules), wherever the
    # packages are installed
    ir_dir, schedules_dir = (Path(importlib.util.find_spec(f"hymba_compile.{name}")
                                  .submodule_search_locations[0]) for name in ("ir", "schedules"))
    here = Path(__file__).resolve().parent
    files = sorted(ir_dir.glob("*.py")) + sorted(schedules_dir.rglob("*.py"))
    if not files:
        raise RuntimeError(f"no ir/ or schedules/ sources found under {ir_dir}, {schedules_dir}")
    built_by = ["pipeline.py", "cuda_export.py", "cuda_compile.py"]  # passes, nvcc, export
    return files + sorted(here.glob("program*.py")) + [here / name for name in built_by]


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


def versions() -> dict[str, str]:
    """Versions an executable depends on (recorded in the manifest, part of the key)."""
    import torch  # noqa: PLC0415 - only for its version

    from . import __version__  # noqa: PLC0415 - the package's own, installed or not

    return {"tvm": tvm.__version__, "tvm_ffi": _version("apache-tvm-ffi"),
            "torch": torch.__version__, "package": __version__}


def source_digest() -> str:
    """sha256 of the sources that generate the IR and the schedules (read, not imported)."""
    h = hashlib.sha256()
    for path in _source_files():
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def artifact_key(spec: ProgramSpec, target: str, variants: dict | None = None,
                 cuda_graph: bool = True, tuned_records: str | None = None) -> str:
    """The cache key of the executable for `spec` on `target` (named target, e.g. "cpu",
    "cuda:sm_90"). Needs TVM's compiler (the target's full description, e.g. the host CPU)."""
    from hymba_compile.schedules import named_target  # noqa: PLC0415

    parts = {"spec": spec.digest(), "variants": choices_key(variants),
             "target": str(named_target(target)), "sources": source_digest(), **versions()}
    if not is_cpu_target(target):
        parts["cuda_graph"] = bool(cuda_graph)
    if tuned_records is not None:  # a "tuned" choice: the database's contents
        parts["tuned_records"] = tuned_records
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


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


def verify(entry: Path, key: str | None) -> str | None:
    """None if the entry is complete and intact (for `key`, unless None), else why not."""
    manifest_path, library = entry / MANIFEST, entry / LIBRARY
    if not manifest_path.is_file() or not library.is_file():
        return "incomplete entry"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as e:
        return f"unreadable manifest ({e})"
    if key is not None and manifest.get("key") != key:
        return "manifest of another key"
    if library.stat().st_size != manifest.get("size") or _sha256(library) != manifest.get("sha256"):
        return "library does not match its recorded checksum"
    return None


def compiler_available() -> bool:
    """False under a runtime-only TVM (no libtvm_compiler, or TVM_USE_RUNTIME_LIB=1)."""
    return not getattr(tvm.base, "_RUNTIME_ONLY", False)


def read_manifest(entry: Path) -> dict:
    return json.loads((Path(entry) / MANIFEST).read_text())


def find_prebuilt(spec: ProgramSpec, target: str, cache_dir: str | os.PathLike | None = None,
                  cuda_graph: bool = True, variants: dict | None = None) -> Artifact:
    """An intact entry under `cache_dir` (or an entry folder itself) built for `spec` on the
    target named `target` ("cpu" matches any CPU build) from these sources and versions (and,
    when `variants` is given, with exactly those kernel choices; {}: the defaults), without
    computing the key. HymbaError listing what is there when none matches."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    want = {"spec_digest": spec.digest(), "source_digest": source_digest(), **{
        k: v for k, v in versions().items() if k in ("tvm", "package")}}
    for entry in entries(root):
        try:
            m = read_manifest(entry)
        except (OSError, ValueError):
            continue
        name = m.get("target_name", "?")
        same_target = name == target or (target == "cpu" and is_cpu_target(name))
        same_graph = m.get("kind") != "cuda" or m.get("cuda_graph") == bool(cuda_graph)
        same_choices = variants is None or json.dumps(m.get("choices", []), sort_keys=True) == \
            json.dumps(choices_key(variants), sort_keys=True)
        if same_target and same_graph and same_choices and all(m.get(k) == v for k, v in want.items()) \
                and verify(entry, None) is None:
            return Artifact(entry, m["key"], float(m.get("compile_s", 0.0)), built_now=False)
    raise HymbaError(f"no prebuilt program for {target} matching this model, dtype "
                     f"{spec.weight_dtype}, decode batches {list(spec.decode_batches)} and these "
                     f"sources in {root} (available: {available(root)}), and no TVM compiler to "
                     "build one")


def entries(root: Path) -> list[Path]:
    """`root` itself when it is an entry folder, else the entry folders in it (those holding a
    manifest)."""
    root = Path(root)
    if (root / MANIFEST).is_file():
        return [root]
    return sorted(p for p in root.glob("*") if (p / MANIFEST).is_file()) if root.is_dir() else []


def available(root: Path) -> str:
    """What the entries under `root` were built for, e.g. "cuda:sm_80 (bfloat16, batches
    [1, 4]); cpu (float32, batches [1])", or "none"."""
    seen = []
    for entry in entries(root):
        try:
            m = read_manifest(entry)
        except (OSError, ValueError):
            continue
        seen.append(f"{m.get('target_name', '?')} ({m.get('weight_dtype')}, batches "
                    f"{m.get('decode_batches')})")
    return "; ".join(seen) or "none"


def target_choices(root: Path, target: str) -> tuple[dict, Path]:
    """The choices `explore` recorded for `target` on this machine under the cache `root`
    ({} when none) and the file they come from."""
    from hymba_compile.schedules.target import host_mcpu  # noqa: PLC0415

    path = choices_path(root, target, host_mcpu() if is_cpu_target(target) else None)
    return read_choices(path), path


def ensure_compiled(spec: ProgramSpec, target: str = "cpu", cache_dir: str | os.PathLike | None = None,
                    variants: dict | None = None, progress: bool = True,
                    force: bool = False, cuda_graph: bool = True) -> Artifact:
    """The cached executable for (spec, target), compiling it first if it is missing, corrupt or
    `force`d. Prints why an entry is rebuilt; shows a progress bar while compiling. Under a
    runtime-only TVM, a matching prebuilt entry (`find_prebuilt`).

    variants None: the choices `explore` recorded for the target in the cache (`choices/`),
    else the defaults; {} forces the hand-written defaults."""
    if not compiler_available():
        if force:
            raise HymbaError("cannot rebuild (force): this TVM is runtime-only, without a compiler")
        return find_prebuilt(spec, target, cache_dir, cuda_graph, variants)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    if variants is None:
        variants, _ = target_choices(root, target)
    tdir, records = _tuned_database(root, target, variants)
    key = artifact_key(spec, target, variants, cuda_graph, records)
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
    return _compile_into(entry, key, spec, target, variants, progress, cuda_graph, tdir)


def _tuned_database(root: Path, target: str, variants: dict) -> tuple[Path | None, str | None]:
    """(the target's tuning database folder, sha256 of its records) when a choice is "tuned",
    else (None, None)."""
    if not any(Choice.coerce(c).variant == TUNED for c in variants.values()):
        return None, None
    from hymba_compile.schedules.target import host_mcpu  # noqa: PLC0415
    from hymba_compile.schedules.tuned import RECORD_FILE  # noqa: PLC0415

    folder = tuned_dir(root, target, host_mcpu() if is_cpu_target(target) else None)
    records = folder / RECORD_FILE
    return folder, _sha256(records) if records.is_file() else "none"


def _compile_into(entry: Path, key: str, spec: ProgramSpec, target: str,
                  variants: dict | None, progress: bool, cuda_graph: bool,
                  tdir: Path | None = None) -> Artifact:
    from tqdm import tqdm  # noqa: PLC0415

    from hymba_compile.schedules import named_target  # noqa: PLC0415

    from .cuda_compile import CudaCompileError  # noqa: PLC0415
    from .program_build import build_and_export  # noqa: PLC0415

    t0 = time.perf_counter()
    tgt = named_target(target)
    staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=entry.parent))
    try:
        library = staging / LIBRARY
        with tqdm(desc=f"{target}: scheduling kernels", unit=" kernel", disable=not progress,
                  leave=False) as bar:
            try:
                details = build_and_export(
                    spec, tgt, target, variants, library, cuda_graph,
                    tuned_dir=tdir, on_kernel=lambda _: bar.update(),
                    on_stage=lambda s: bar.set_description(f"{target}: {s}"))
            except CudaCompileError as e:  # nvcc missing or failing: names the arch and kernel
                raise HymbaError(f"cannot compile the {target} program: {e}; programs in "
                                 f"{entry.parent}: {available(entry.parent)}") from None
        compile_s = time.perf_counter() - t0
        manifest = {"key": key, "sha256": _sha256(library), "size": library.stat().st_size,
                    "target": str(tgt), "target_name": target, "weight_dtype": spec.weight_dtype,
                    "decode_batches": list(spec.decode_batches),
                    "spec_digest": spec.digest(), "source_digest": source_digest(),
                    "choices": choices_key(variants),
                    **versions(), **details,
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
        print(f"hymba_compile: compiled {len(manifest['kernels'])} kernels for {target} in "
              f"{compile_s:.1f} s -> {entry}", file=sys.stderr, flush=True)
    return Artifact(entry, key, compile_s, built_now=True)


def load_executable(artifact: Artifact) -> tvm.runtime.Module:
    """The entry's library, loaded (for a CUDA program, TVM's CUDA runtime first; for one that
    calls a vendor library, its packed functions registered first)."""
    manifest = read_manifest(artifact.path)
    if manifest.get("kind") == "cuda":
        from .runtime import load_cuda_runtime  # noqa: PLC0415

        load_cuda_runtime()
    if any(k.get("variant") == "library" for k in manifest.get("kernels", {}).values()):
        importlib.import_module(f"{__package__}.library")  # registers its packed functions
    return tvm.runtime.load_module(str(artifact.library))

