"""`harness bundle build SCENARIO --output DIR`: the apt bundle (harness.apt_bundle) of what a green
run of the scenario installed (harness.node_packages' record).

The .deb files come from the host's package cache over the loopback (127.0.0.1:3142, as a proxy
for the URIs apt on the nodes used; the only connection this process makes): what the run
downloaded is in the cache already, and anything else is fetched by the cache from Debian. Each file must have the
SHA-256 the node's apt lists gave. The repository is made with Debian's tools (apt-ftparchive for
Packages and Release) and signed with a key generated for this bundle in a temporary GNUPGHOME,
which is deleted afterwards: the private key exists nowhere once the bundle is built, and
key.gpg is the only key that can verify it.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import posixpath
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urlparse

from harness import apt_bundle, bundle, cache, proc, rehearsal, tools
from harness.apt_bundle import Manifest
from harness.errors import HostError, UsageError
from harness.node_packages import Installed, PackageRecord, find_green_record
from harness.spec import Scenario

log = logging.getLogger(__name__)

# The cache on the loopback: every download goes there, whatever proxy settings the environment has.
CACHE_ADDRESS = ("127.0.0.1", cache.PORT)
FETCH_WORKERS = 4
FETCH_TIMEOUT_S = 300
_CHUNK = 1 << 20


def debian_uri_problem(uri: str) -> str | None:
    """Why the package cache would not serve this URI (not Debian's archive over http), or None."""
    prefixes = [f"http://{p}/" for _name, given, _target in cache.REPOSITORIES for p in given]
    if not uri:
        return "apt on the node knew no source for this version (installed from a local file?)"
    if not uri.startswith(tuple(prefixes)):
        return f"it came from {uri}, not from Debian's archive ({', '.join(prefixes)}), which is all the cache serves"
    return None


def deb_name(uri: str) -> str:
    """The file name a .deb gets in the bundle's pool/ (the last part of its URI, unquoted)."""
    return posixpath.basename(unquote(urlparse(uri).path))


def _download(uri: str, dest: Path, address: tuple[str, int], timeout: float) -> str:
    """GET uri through the cache at `address` (a proxy request on the loopback) into dest; its SHA-256."""
    h = hashlib.sha256()
    conn = http.client.HTTPConnection(*address, timeout=timeout)
    try:
        conn.request("GET", uri, headers={"Host": urlparse(uri).netloc})
        resp = conn.getresponse()
        if resp.status != 200:
            raise OSError(f"HTTP {resp.status} {resp.reason}")
        with dest.open("wb") as fh:
            while chunk := resp.read(_CHUNK):
                h.update(chunk)
                fh.write(chunk)
    finally:
        conn.close()
    return h.hexdigest()


def fetch(
    packages: Sequence[Installed],
    pool: Path,
    *,
    address: tuple[str, int] = CACHE_ADDRESS,
    workers: int = FETCH_WORKERS,
    timeout: float = FETCH_TIMEOUT_S,
) -> int:
    """Download every package through the cache into `pool`, each checked against its SHA-256;
    the bytes fetched. HostError naming every package that could not be had."""
    problems = []
    for p in packages:
        why = debian_uri_problem(p.uri)
        if why:
            problems.append(f"{p.package}={p.version}: {why}")
        elif not p.sha256:
            problems.append(f"{p.package}={p.version}: the record has no SHA-256 for it")
    if problems:
        raise HostError("cannot bundle these packages:\n" + "\n".join(f"  - {p}" for p in problems))
    pool.mkdir(parents=True, exist_ok=True)
    where = f"the cache at {address[0]}:{address[1]}"

    def get(p: Installed) -> str | None:
        dest = pool / deb_name(p.uri)
        part = dest.with_name(dest.name + ".part")
        try:
            digest = _download(p.uri, part, address, timeout)
        except (OSError, http.client.HTTPException) as exc:
            part.unlink(missing_ok=True)
            return f"{p.package}={p.version}: {p.uri} through {where}: {exc}"
        if digest != p.sha256:
            part.unlink(missing_ok=True)
            return f"{p.package}={p.version}: SHA-256 {digest[:16]}... is not the {p.sha256[:16]}... apt knew"
        part.replace(dest)
        return None

    unique = list({deb_name(p.uri): p for p in packages}.values())
    with ThreadPoolExecutor(max_workers=max(1, workers)) as ex:
        failed = [why for why in ex.map(get, unique) if why]
    if failed:
        raise HostError(
            "the package cache did not give every package (is it running, `harness host setup`, and can it "
            "reach deb.debian.org?):\n" + "\n".join(f"  - {f}" for f in failed)
        )
    return sum((pool / deb_name(p.uri)).stat().st_size for p in unique)


def _run(argv: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None) -> proc.CommandResult:
    result = proc.run([tools.find(argv[0]), *argv[1:]], cwd=cwd, env=env, timeout=600)
    if not result.ok:
        raise HostError(f"building the apt bundle failed: {result.describe()}")
    return result


def write_index(root: Path, label: str) -> None:
    """Packages and Release of the flat repository in root (apt-ftparchive), from pool/*.deb."""
    packages = _run(["apt-ftparchive", "packages", apt_bundle.POOL], cwd=root).stdout
    (root / apt_bundle.PACKAGES).write_text(packages, encoding="utf-8")
    release = _run(
        [
            "apt-ftparchive",
            "-o",
            "APT::FTPArchive::Release::Origin=harness",
            "-o",
            f"APT::FTPArchive::Release::Label={label}",
            "release",
            ".",
        ],
        cwd=root,
    ).stdout
    (root / apt_bundle.RELEASE).write_text(release, encoding="utf-8")


def sign(root: Path, uid: str) -> str:
    """Sign Release (InRelease, Release.gpg) with a key made now in a temporary GNUPGHOME and write
    its public half to key.gpg; the GNUPGHOME (the private key) is deleted. The key's fingerprint."""
    home = Path(tempfile.mkdtemp(prefix="harness-gpg-"))
    env = {"GNUPGHOME": str(home)}
    gpg = ["gpg", "--batch", "--yes", "--quiet", "--pinentry-mode", "loopback", "--passphrase", ""]
    try:
        _run([*gpg, "--quick-gen-key", uid, "ed25519", "sign", "never"], env=env)
        listing = _run(["gpg", "--batch", "--with-colons", "--list-secret-keys"], env=env).stdout
        fingerprint = next(ln.split(":")[9] for ln in listing.splitlines() if ln.startswith("fpr:"))
        release = str(root / apt_bundle.RELEASE)
        signer = ["--local-user", fingerprint, "--digest-algo", "SHA512"]
        _run([*gpg, *signer, "--clearsign", "-o", str(root / apt_bundle.INRELEASE), release], env=env)
        _run([*gpg, *signer, "--armor", "--detach-sign", "-o", str(root / apt_bundle.RELEASE_SIG), release], env=env)
        _run(["gpg", "--batch", "--yes", "--export", "-o", str(root / apt_bundle.KEY), fingerprint], env=env)
        return fingerprint
    finally:
        proc.run(["gpgconf", "--homedir", str(home), "--kill", "all"], timeout=30, env=env)
        shutil.rmtree(home, ignore_errors=True)


def assemble(root: Path, record: PackageRecord) -> Manifest:
    """Index, sign, manifest and SHA256SUMS for the .deb files under root/pool."""
    write_index(root, f"harness bundle {record.scenario}")
    uid = f"harness bundle {record.scenario} {record.run_id} {datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}"
    fingerprint = sign(root, uid)
    entries, problems = apt_bundle.entries_from_packages((root / apt_bundle.PACKAGES).read_text(encoding="utf-8"))
    if problems:
        raise HostError("apt-ftparchive wrote an index this harness cannot read: " + "; ".join(problems))
    manifest = Manifest(
        scenario=record.scenario,
        run_id=record.run_id,
        content_digest=record.content_digest,
        built=datetime.now(UTC).isoformat(timespec="seconds"),
        key_fingerprint=fingerprint,
        packages=sorted(entries, key=lambda e: e.key),
    )
    (root / apt_bundle.MANIFEST).write_text(manifest.to_json(), encoding="utf-8")
    names = [n for n in bundle.files_under(root) if n != bundle.SUMS_FILE]
    (root / bundle.SUMS_FILE).write_text(bundle.sums_text(root, names), encoding="utf-8")
    return manifest


@dataclass(frozen=True)
class BuildResult:
    bundle: apt_bundle.AptBundle
    record_path: Path
    seconds: float
    bytes_total: int
    notes: list[str] = field(default_factory=list)


def _staging(output: Path) -> Path:
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise UsageError(f"{output} exists and is not an empty directory: remove it or choose another --output")
    output.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))


def build_from_record(
    record: PackageRecord, output: Path, *, fetcher: Callable[[Sequence[Installed], Path], int] = fetch
) -> apt_bundle.AptBundle:
    """The bundle of a record's packages, built beside `output` and moved there when it checks out
    (no packages: an empty repository, which apt reads as one with nothing in it)."""
    staging = _staging(output)
    try:
        os.chmod(staging, 0o755)
        fetcher(record.packages, staging / apt_bundle.POOL)
        assemble(staging, record)
        apt_bundle.check_bundle(staging)
        if output.exists():
            output.rmdir()
        staging.rename(output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return apt_bundle.check_bundle(output)


def build(scenario: Scenario, output: Path, report_dir: Path | None = None) -> BuildResult:
    """`harness bundle build`: the newest green run's record (or the one in report_dir), bundled."""
    started = time.monotonic()
    for tool in ("apt-ftparchive", "gpg", "gpgv"):
        tools.find(tool)
    record, path = find_green_record(scenario.name, report_dir)
    notes = []
    if not record.has_baseline:
        notes.append("the run has no list of the box's own packages: every installed package is bundled")
    current = rehearsal.content_manifest(scenario).digest
    if record.content_digest and record.content_digest != current:
        notes.append(
            f"run {record.run_id} rehearsed other content ({record.content_digest[:16]}) than the scenario has now "
            f"({current[:16]}): run it again for a bundle of what it installs now"
        )
    if not record.packages:
        notes.append(f"run {record.run_id} installed nothing beyond the box: the bundle is an empty repository")
    built = build_from_record(record, output)
    size = sum(p.stat().st_size for p in output.rglob("*") if p.is_file())
    return BuildResult(built, path, time.monotonic() - started, size, notes)
