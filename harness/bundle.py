"""Checked file bundles: a directory of files brought onto an offline host, each named with its
SHA-256 in a `SHA256SUMS` file (the format `sha256sum` writes and `sha256sum -c` reads).

This module knows nothing of what a bundle holds: it reads SHA256SUMS and compares it with the
directory (files missing, damaged or not listed). A kind of bundle (the k3s air-gap bundle in
`harness.k8s_bundle`, the apt bundle in `harness.apt_bundle`) adds its own required files and
manifest on top and turns the result into one list of problems.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from harness.errors import SpecError

SUMS_FILE = "SHA256SUMS"
_SUM_LINE = re.compile(r"^(?P<digest>[0-9a-fA-F]{64}) [ *](?P<name>.+)$")
_CHUNK = 1 << 20
# (resolved path, size, mtime_ns) → digest: a bundle checked twice in one process (validate, then
# up) is hashed once; a changed file has another size or mtime and is hashed again.
_digests: dict[tuple[str, int, int], str] = {}


def relative_name_problem(name: str) -> str | None:
    """Why `name` is not a plain relative path inside a bundle (absolute, `..`, backslashes), or None."""
    path = PurePosixPath(name)
    if not name or name != name.strip():
        return "empty or surrounded by spaces"
    if path.is_absolute() or "\\" in name:
        return "must be a path relative to the bundle directory, with '/' between parts"
    if any(part in ("..", ".") for part in path.parts) or name.startswith("./"):
        return "must not contain '.' or '..' parts"
    return None


def read_sums(text: str) -> tuple[dict[str, str], list[str]]:
    """Parse SHA256SUMS text: ({relative name: lowercase hex digest}, problems with their line)."""
    sums: dict[str, str] = {}
    problems: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip("\r")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _SUM_LINE.match(line)
        if match is None:
            problems.append(
                f"{SUMS_FILE} line {number}: expected '<64 hex digits>  <file>' (as `sha256sum` writes), "
                f"got {line[:80]!r}"
            )
            continue
        name = match["name"].removeprefix("./")
        why = relative_name_problem(name)
        if why:
            problems.append(f"{SUMS_FILE} line {number}: {name!r} {why}")
        elif name in sums:
            problems.append(f"{SUMS_FILE} line {number}: {name} is listed twice")
        else:
            sums[name] = match["digest"].lower()
    return sums, problems


def sha256_file(path: Path) -> str:
    """The file's SHA-256 (hex), remembered by path, size and mtime for the life of the process."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    cached = _digests.get(key)
    if cached is not None:
        return cached
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    digest = h.hexdigest()
    _digests[key] = digest
    return digest


def files_under(root: Path) -> list[str]:
    """Every regular file under root (following no directory symlinks), relative names, sorted."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


@dataclass(frozen=True)
class Mismatch:
    name: str
    expected: str
    actual: str


@dataclass(frozen=True)
class FileCheck:
    """A directory compared with its SHA256SUMS."""

    missing: tuple[str, ...] = ()  # listed in SHA256SUMS, not in the directory
    mismatched: tuple[Mismatch, ...] = ()  # present, other content than listed
    unlisted: tuple[str, ...] = ()  # present, not listed (cannot be verified)
    verified: tuple[str, ...] = ()  # present, content as listed
    bytes_verified: int = 0
    unreadable: tuple[tuple[str, str], ...] = ()  # present, cannot be read: (name, why)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.mismatched or self.unlisted or self.unreadable)


def verify_files(root: Path, sums: Mapping[str, str], *, ignore: Collection[str] = (SUMS_FILE,)) -> FileCheck:
    """Compare the files under root with `sums` (from read_sums); names in `ignore` are not checked."""
    present = [n for n in files_under(root) if n not in ignore]
    missing = tuple(n for n in sums if not (root / n).is_file())
    mismatched: list[Mismatch] = []
    verified: list[str] = []
    unreadable: list[tuple[str, str]] = []
    size = 0
    for name in present:
        expected = sums.get(name)
        if expected is None:
            continue
        try:
            actual = sha256_file(root / name)
        except OSError as exc:
            unreadable.append((name, exc.strerror or str(exc)))
            continue
        if actual == expected:
            verified.append(name)
            size += (root / name).stat().st_size
        else:
            mismatched.append(Mismatch(name, expected, actual))
    unlisted = tuple(n for n in present if n not in sums)
    return FileCheck(missing, tuple(mismatched), unlisted, tuple(verified), size, tuple(unreadable))


def describe(check: FileCheck, hints: Mapping[str, str] | None = None) -> list[str]:
    """One problem line per file of a FileCheck. `hints` (name → where to get it) completes the
    line of a missing file."""
    hints = hints or {}
    problems = [f"{n}: listed in {SUMS_FILE} but missing{'; ' + hints[n] if n in hints else ''}" for n in check.missing]
    problems += [
        f"{m.name}: SHA-256 is {m.actual[:16]}... but {SUMS_FILE} says {m.expected[:16]}...: the file is damaged "
        "or was replaced; get it again (or, if the new file is the one you want, update its line in "
        f"{SUMS_FILE})"
        for m in check.mismatched
    ]
    problems += [
        f"{n}: not listed in {SUMS_FILE}, so it cannot be verified: add its line "
        f"(`sha256sum {n} >> {SUMS_FILE}` in the bundle directory) or remove the file"
        for n in check.unlisted
    ]
    problems += [f"{n}: cannot read it: {why}" for n, why in check.unreadable]
    return problems


def sums_text(root: Path, names: Collection[str]) -> str:
    """SHA256SUMS content for `names` under root (what `sha256sum NAME... > SHA256SUMS` writes)."""
    return "".join(f"{sha256_file(root / n)}  {n}\n" for n in sorted(names))


def detect_kind(root: Path, kinds: Mapping[str, Collection[str]]) -> str:
    """Which kind of bundle `root` is: the first kind (kind → marker files) with a marker file
    there. SpecError (exit 2) when it is no directory or no kind's markers are there."""
    if not root.is_dir():
        raise SpecError(str(root), ["no such directory"])
    for kind, markers in kinds.items():
        if any((root / m).is_file() for m in markers):
            return kind
    known = "; ".join(f"{kind}: {', '.join(markers)}" for kind, markers in kinds.items())
    raise SpecError(str(root), [f"not a bundle this harness knows: none of the files that mark one is there ({known})"])
