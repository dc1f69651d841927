"""The apt bundle: a signed Debian repository with exactly the packages a cluster installed, made by
`harness bundle build` (harness.apt_bundle_build) and used by an `offline:` scenario or a real
air-gapped site. This module knows its layout and checks it.

Layout (docs/offline.md, "Offline runs: the apt bundle"), a flat repository (`deb URL ./`):

    pool/*.deb         the packages
    Packages           their index (apt-ftparchive), SHA-256 of each .deb
    Release            SHA-256 of Packages (apt-ftparchive release)
    InRelease          Release, clear-signed
    Release.gpg        Release's detached signature
    key.gpg            the public key that signed it (binary OpenPGP; a node's `signed-by`)
    manifest.json      package, version, architecture, file, sha256, size of each .deb; the run
    SHA256SUMS         every file above (`sha256sum` format)

The check follows the chain apt follows (key → InRelease → Packages → each .deb), compares the
manifest with Packages and the directory with SHA256SUMS, and names every problem.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness import bundle, proc
from harness.errors import SpecError

MANIFEST = "manifest.json"
KEY = "key.gpg"
PACKAGES = "Packages"
RELEASE = "Release"
INRELEASE = "InRelease"
RELEASE_SIG = "Release.gpg"
POOL = "pool"
KIND = "apt"
# Files any of which marks a directory as an apt bundle (harness.bundle.detect_kind).
MARKERS = (MANIFEST, INRELEASE, PACKAGES, KEY)
README_SECTION = "docs/offline.md 'Offline runs: the apt bundle'"
REBUILD = "build it again with `harness bundle build SCENARIO --output DIR` after a green run"


class ManifestEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    package: str
    version: str
    architecture: str
    filename: Annotated[str, Field(description="path in the bundle, pool/<name>.deb")]
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    size: Annotated[int, Field(ge=0)]

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.package, self.version, self.architecture)


class Manifest(BaseModel):
    """manifest.json."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str = KIND
    schema_version: int = 1
    scenario: str
    run_id: str = ""
    content_digest: str = ""
    built: str = ""
    key_fingerprint: str = ""
    packages: list[ManifestEntry]

    def to_json(self) -> str:
        return json.dumps(self.model_dump(), indent=1) + "\n"


def parse_control(text: str) -> list[dict[str, str]]:
    """deb822 stanzas (Packages, Release) as dicts; a multi-line field keeps its lines ('\\n'-joined)."""
    stanzas: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last = ""
    for line in text.splitlines():
        if not line.strip():
            if current:
                stanzas.append(current)
            current, last = {}, ""
        elif line[0] in " \t" and last:
            current[last] += "\n" + line.strip()
        elif ":" in line:
            last, _, value = line.partition(":")
            current[last] = value.strip()
    if current:
        stanzas.append(current)
    return stanzas


def release_sha256(release: dict[str, str]) -> dict[str, tuple[str, int]]:
    """The SHA256 field of a Release stanza: file → (digest, size)."""
    out: dict[str, tuple[str, int]] = {}
    for line in release.get("SHA256", "").splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1].isdigit():
            out[parts[2]] = (parts[0].lower(), int(parts[1]))
    return out


def entries_from_packages(text: str) -> tuple[list[ManifestEntry], list[str]]:
    """The stanzas of a Packages file as manifest entries, and the problems of those that are none."""
    entries: list[ManifestEntry] = []
    problems: list[str] = []
    for k, st in enumerate(parse_control(text), start=1):
        try:
            entries.append(
                ManifestEntry(
                    package=st["Package"],
                    version=st["Version"],
                    architecture=st["Architecture"],
                    filename=st["Filename"].removeprefix("./"),
                    sha256=st["SHA256"].lower(),
                    size=int(st["Size"]),
                )
            )
        except (KeyError, ValueError, ValidationError) as exc:
            problems.append(f"{PACKAGES}: entry {k} ({st.get('Package', '?')}) is incomplete or malformed: {exc}")
    return entries, problems


@dataclass(frozen=True)
class AptBundle:
    root: Path
    manifest: Manifest
    files: bundle.FileCheck
    fingerprint: str

    def summary(self) -> str:
        mib = sum(p.size for p in self.manifest.packages) / (1 << 20)
        return (
            f"apt bundle of {self.manifest.scenario} (run {self.manifest.run_id or '?'}): "
            f"{len(self.manifest.packages)} packages ({mib:.1f} MiB), {len(self.files.verified)} files verified, "
            f"signed by {self.fingerprint}"
        )


def verify_signature(root: Path) -> tuple[str | None, str, list[str]]:
    """gpgv: InRelease and Release.gpg against key.gpg. (the signed Release text or None, the
    signing key's fingerprint, problems)."""
    problems: list[str] = []
    signed: str | None = None
    fingerprint = ""
    with tempfile.TemporaryDirectory(prefix="harness-gpgv-") as home:
        base = ["gpgv", "--homedir", home, "--status-fd", "1", "--keyring", str(root / KEY)]
        if (root / INRELEASE).is_file():
            with tempfile.NamedTemporaryFile(dir=home, suffix=".txt") as out:
                res = proc.run([*base, "--output", out.name, str(root / INRELEASE)], timeout=60)
                if res.ok:
                    signed = Path(out.name).read_text(encoding="utf-8", errors="replace")
                    fingerprint = _fingerprint(res.stdout)
                else:
                    problems.append(f"{INRELEASE}: bad signature ({_gpgv_why(res)}); {_SIG_HINT}")
        if (root / RELEASE_SIG).is_file() and (root / RELEASE).is_file():
            res = proc.run([*base, str(root / RELEASE_SIG), str(root / RELEASE)], timeout=60)
            if not res.ok:
                problems.append(f"{RELEASE_SIG}: bad signature of {RELEASE} ({_gpgv_why(res)}); {_SIG_HINT}")
            else:
                fingerprint = fingerprint or _fingerprint(res.stdout)
    return signed, fingerprint, problems


_SIG_HINT = f"the file was changed after signing, or {KEY} is not the key that signed it: {REBUILD}"


def _fingerprint(status: str) -> str:
    for line in status.splitlines():
        parts = line.split()
        if len(parts) > 2 and parts[:2] == ["[GNUPG:]", "VALIDSIG"]:
            return parts[2]
    return ""


def _gpgv_why(res: proc.CommandResult) -> str:
    if res.rc == 127:
        return "gpgv is not installed: apt package gpgv"
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    return lines[-1].strip() if lines else f"gpgv exited {res.rc}"


def _read_manifest(root: Path) -> tuple[Manifest | None, list[str]]:
    path = root / MANIFEST
    if not path.is_file():
        return None, []
    try:
        return Manifest.model_validate_json(path.read_text(encoding="utf-8")), []
    except (OSError, UnicodeDecodeError) as exc:
        return None, [f"{MANIFEST}: cannot read it: {exc}"]
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "(top level)"
            problems.append(f"{MANIFEST}: {key}: {err['msg']}")
        return None, problems


def _compare(manifest: Manifest, packages: list[ManifestEntry]) -> list[str]:
    """manifest.json against Packages: the same package versions, files and digests."""
    problems: list[str] = []
    indexed = {e.key: e for e in packages}
    listed = {e.key: e for e in manifest.packages}
    for key, entry in listed.items():
        name = "{}={} ({})".format(*key)
        other = indexed.get(key)
        if other is None:
            problems.append(f"{MANIFEST}: {name} is not in {PACKAGES}: apt on the nodes would not find it; {REBUILD}")
        elif (other.filename, other.sha256, other.size) != (entry.filename, entry.sha256, entry.size):
            problems.append(
                f"{MANIFEST}: {name}: file, SHA-256 or size differ from {PACKAGES} "
                f"({entry.filename} {entry.sha256[:16]}... vs {other.filename} {other.sha256[:16]}...); {REBUILD}"
            )
    for key in indexed.keys() - listed.keys():
        problems.append(f"{PACKAGES}: {'{}={} ({})'.format(*key)} is not in {MANIFEST}; {REBUILD}")
    return problems


def _pool_problems(root: Path, packages: list[ManifestEntry]) -> list[str]:
    """Each .deb of Packages is there with its SHA-256; no .deb is there that Packages does not name."""
    problems: list[str] = []
    named = set()
    for entry in packages:
        named.add(entry.filename)
        why = bundle.relative_name_problem(entry.filename)
        path = root / entry.filename
        if why:
            problems.append(f"{PACKAGES}: {entry.package}: Filename {entry.filename!r} {why}")
        elif not path.is_file():
            problems.append(f"{entry.filename}: missing ({entry.package} {entry.version} in {PACKAGES}); {REBUILD}")
        elif (actual := bundle.sha256_file(path)) != entry.sha256:
            problems.append(
                f"{entry.filename}: SHA-256 is {actual[:16]}... but {PACKAGES} (signed through {INRELEASE}) says "
                f"{entry.sha256[:16]}...: the package was changed or replaced; {REBUILD}"
            )
    for name in bundle.files_under(root):
        if PurePosixPath(name).parts[0] == POOL and name not in named:
            problems.append(f"{name}: not in {PACKAGES}, so no node would install it: remove it or {REBUILD}")
    return problems


def check_bundle(root: Path) -> AptBundle:
    """Verify an apt bundle directory; SpecError (exit 2) naming every problem, or the checked bundle."""
    if not root.is_dir():
        raise SpecError(str(root), [f"no such directory; {REBUILD}"])
    required = (MANIFEST, KEY, PACKAGES, RELEASE, INRELEASE, RELEASE_SIG, bundle.SUMS_FILE)
    absent = [n for n in required if not (root / n).is_file()]
    problems = [f"{n}: missing; {REBUILD}" for n in absent]
    manifest, more = _read_manifest(root)
    problems += more
    sums: dict[str, str] = {}
    if bundle.SUMS_FILE not in absent:
        sums, more = bundle.read_sums((root / bundle.SUMS_FILE).read_text(encoding="utf-8", errors="replace"))
        problems += more
    files = bundle.verify_files(root, sums)
    if bundle.SUMS_FILE not in absent:
        reported = bundle.FileCheck(
            tuple(n for n in files.missing if n not in absent and not n.startswith(f"{POOL}/")),
            files.mismatched,
            files.unlisted,
            unreadable=files.unreadable,
        )
        problems += bundle.describe(reported)
    signed, fingerprint = None, ""
    if KEY not in absent:
        signed, fingerprint, more = verify_signature(root)
        problems += more
    packages: list[ManifestEntry] = []
    if PACKAGES not in absent:
        text = (root / PACKAGES).read_text(encoding="utf-8", errors="replace")
        packages, more = entries_from_packages(text)
        problems += more + _pool_problems(root, packages)
        if signed is not None:
            problems += _release_problems(root, signed)
    if manifest is not None and PACKAGES not in absent:
        problems += _compare(manifest, packages)
    if problems or manifest is None:
        raise SpecError(str(root), problems)
    return AptBundle(root, manifest, files, fingerprint)


def _release_problems(root: Path, signed: str) -> list[str]:
    """The signed Release (from InRelease) names Packages with its digest; Release says the same."""
    problems: list[str] = []
    stanzas = parse_control(signed)
    listed = release_sha256(stanzas[0]) if stanzas else {}
    if PACKAGES not in listed:
        return [f"{INRELEASE}: its Release lists no SHA-256 of {PACKAGES}; {REBUILD}"]
    digest, size = listed[PACKAGES]
    actual = bundle.sha256_file(root / PACKAGES)
    if actual != digest or (root / PACKAGES).stat().st_size != size:
        problems.append(
            f"{PACKAGES}: SHA-256 is {actual[:16]}... but the signed {INRELEASE} says {digest[:16]}...: the index was "
            f"changed after signing; {REBUILD}"
        )
    if (root / RELEASE).is_file():
        plain = parse_control((root / RELEASE).read_text(encoding="utf-8", errors="replace"))
        if not plain or release_sha256(plain[0]) != listed:
            problems.append(f"{RELEASE}: differs from the Release signed in {INRELEASE}; {REBUILD}")
    return problems
