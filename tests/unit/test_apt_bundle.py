"""The apt bundle: built from a package record with the real tools (dpkg-deb for tiny packages,
apt-ftparchive, gpg with a key made for the bundle, gpgv), checked, and broken on purpose: a file
missing, a .deb tampered with (with and without its SHA256SUMS line updated), a bad signature, a
manifest that disagrees with Packages. The .deb files come from a fake cache on the loopback."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from click.testing import CliRunner

from harness import apt_bundle, apt_bundle_build, bundle, tools
from harness.cli import main
from harness.errors import HostError, SpecError, UsageError
from harness.node_packages import Installed, PackageRecord

pytestmark = pytest.mark.skipif(
    any(tools.which(t) is None for t in ("apt-ftparchive", "gpg", "gpgv", "dpkg-deb")),
    reason="needs apt-ftparchive (apt-utils), gpg, gpgv and dpkg-deb: `harness host setup` installs them",
)

DEBIAN = "http://deb.debian.org/debian/pool/main"
PACKAGES = (("hx-alpha", "1.0-1", "amd64"), ("hx-beta", "2.3+deb12u1", "all"))


def _make_deb(where: Path, name: str, version: str, arch: str) -> Path:
    root = where / f"{name}-src"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "usr/share/doc" / name).mkdir(parents=True)
    (root / "usr/share/doc" / name / "README").write_text(f"{name} {version}\n")
    (root / "DEBIAN/control").write_text(
        f"Package: {name}\nVersion: {version}\nArchitecture: {arch}\nMaintainer: harness <h@example.org>\n"
        f"Description: test package {name}\n"
    )
    out = where / f"{name}_{version}_{arch}.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(root), str(out)], check=True, capture_output=True)
    return out


@pytest.fixture(scope="module")
def debs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    where = tmp_path_factory.mktemp("debs")
    return {f"{DEBIAN}/h/{n}/{n}_{v.replace('+', '%2b')}_{a}.deb": _make_deb(where, n, v, a) for n, v, a in PACKAGES}


def _record(debs: dict[str, Path]) -> PackageRecord:
    installed = []
    for (name, version, arch), (uri, path) in zip(PACKAGES, debs.items(), strict=True):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        installed.append(Installed(name, version, arch, uri, digest, path.stat().st_size))
    return PackageRecord("smoke", "smoke-abc123", "2026-01-01T00:00:00+00:00", "d" * 64, {}, True, installed)


class _FakeCache(http.server.BaseHTTPRequestHandler):
    """Answers proxy requests (`GET http://host/path`) from a dict of URL → file."""

    files: ClassVar[dict[str, Path]] = {}
    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.seen.append(self.path)
        path = self.files.get(self.path)
        if path is None:
            self.send_error(404)
            return
        data = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def fake_cache(debs: dict[str, Path]) -> Iterator[tuple[str, int]]:
    _FakeCache.files = dict(debs)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeCache)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield ("127.0.0.1", server.server_address[1])
    server.shutdown()


@pytest.fixture(scope="module")
def built(debs: dict[str, Path], fake_cache: tuple[str, int], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundles") / "smoke-bundle"

    def fetcher(packages: object, pool: Path) -> int:
        return apt_bundle_build.fetch(packages, pool, address=fake_cache)  # type: ignore[arg-type]

    apt_bundle_build.build_from_record(_record(debs), out, fetcher=fetcher)
    return out


@pytest.fixture
def copy(built: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "bundle"
    shutil.copytree(built, dest)
    return dest


def _problems(root: Path) -> list[str]:
    with pytest.raises(SpecError) as info:
        apt_bundle.check_bundle(root)
    return info.value.problems


def test_a_built_bundle_checks_out_with_its_manifest(built: Path, debs: dict[str, Path]) -> None:
    checked = apt_bundle.check_bundle(built)
    entries = {e.package: e for e in checked.manifest.packages}
    assert sorted(entries) == ["hx-alpha", "hx-beta"]
    for (name, version, arch), path in zip(PACKAGES, debs.values(), strict=True):
        entry = entries[name]
        assert (entry.version, entry.architecture) == (version, arch)
        assert entry.sha256 == hashlib.sha256(path.read_bytes()).hexdigest() and entry.size == path.stat().st_size
        assert entry.filename == f"{apt_bundle.POOL}/{name}_{version}_{arch}.deb"
        assert (built / entry.filename).read_bytes() == path.read_bytes()
    assert checked.manifest.run_id == "smoke-abc123" and checked.manifest.scenario == "smoke"
    assert len(checked.fingerprint) == 40 and checked.manifest.key_fingerprint == checked.fingerprint
    listed = set(bundle.read_sums((built / bundle.SUMS_FILE).read_text())[0])
    assert listed == {n for n in bundle.files_under(built) if n != bundle.SUMS_FILE}
    assert {apt_bundle.KEY, apt_bundle.INRELEASE, apt_bundle.RELEASE_SIG, apt_bundle.MANIFEST} <= listed


def test_the_private_key_is_gone(built: Path) -> None:
    # The bundle holds only the public key; the build's GNUPGHOME is deleted.
    out = subprocess.run(["gpg", "--show-keys", "--with-colons", str(built / apt_bundle.KEY)], capture_output=True)
    assert out.returncode == 0 and b"\nsec:" not in b"\n" + out.stdout and b"pub:" in out.stdout
    assert not list(Path("/tmp").glob("harness-gpg-*"))


def test_the_downloads_went_to_the_cache_as_proxy_requests(built: Path, debs: dict[str, Path]) -> None:
    assert set(debs) <= set(_FakeCache.seen)


def test_a_missing_file_is_named(copy: Path) -> None:
    (copy / apt_bundle.MANIFEST).unlink()
    deb = next((copy / apt_bundle.POOL).iterdir())
    deb.unlink()
    problems = _problems(copy)
    assert any(p.startswith(f"{apt_bundle.MANIFEST}: missing") for p in problems), problems
    assert any(p.startswith(f"{apt_bundle.POOL}/{deb.name}: missing") for p in problems), problems


def test_a_tampered_deb_is_named_even_with_its_sums_line_updated(copy: Path) -> None:
    deb = next((copy / apt_bundle.POOL).iterdir())
    deb.write_bytes(deb.read_bytes() + b"tampered")
    name = f"{apt_bundle.POOL}/{deb.name}"
    problems = _problems(copy)
    assert any(p.startswith(name) and bundle.SUMS_FILE in p for p in problems), problems
    assert any(p.startswith(name) and apt_bundle.PACKAGES in p for p in problems), problems
    # Whoever changed the .deb also rewrote SHA256SUMS: the signed chain still catches it.
    names = [n for n in bundle.files_under(copy) if n != bundle.SUMS_FILE]
    (copy / bundle.SUMS_FILE).write_text(bundle.sums_text(copy, names))
    problems = _problems(copy)
    assert len(problems) == 1 and problems[0].startswith(name) and "signed through InRelease" in problems[0]


def test_a_bad_signature_is_named(copy: Path) -> None:
    text = (copy / apt_bundle.INRELEASE).read_text()
    (copy / apt_bundle.INRELEASE).write_text(text.replace("Origin: harness", "Origin: someone-else"))
    problems = _problems(copy)
    assert any(p.startswith(f"{apt_bundle.INRELEASE}: bad signature") for p in problems), problems


def test_a_key_that_did_not_sign_it_is_a_bad_signature(copy: Path, tmp_path: Path, built: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(built, other)
    apt_bundle_build.sign(other, "another key")
    shutil.copyfile(other / apt_bundle.KEY, copy / apt_bundle.KEY)
    names = [n for n in bundle.files_under(copy) if n != bundle.SUMS_FILE]
    (copy / bundle.SUMS_FILE).write_text(bundle.sums_text(copy, names))
    problems = _problems(copy)
    assert any(p.startswith(f"{apt_bundle.INRELEASE}: bad signature") for p in problems), problems
    assert any(p.startswith(f"{apt_bundle.RELEASE_SIG}: bad signature") for p in problems), problems


def test_a_packages_index_changed_after_signing_is_named(copy: Path) -> None:
    packages = copy / apt_bundle.PACKAGES
    packages.write_text(packages.read_text().replace("hx-beta", "hx-gamma"))
    problems = _problems(copy)
    assert any(p.startswith(f"{apt_bundle.PACKAGES}: SHA-256") and "after signing" in p for p in problems), problems
    assert any("hx-beta=2.3+deb12u1 (all) is not in Packages" in p for p in problems), problems
    assert any("hx-gamma=2.3+deb12u1 (all) is not in manifest.json" in p for p in problems), problems


def test_a_manifest_that_disagrees_with_packages_is_named(copy: Path) -> None:
    manifest = copy / apt_bundle.MANIFEST
    manifest.write_text(manifest.read_text().replace('"1.0-1"', '"1.0-2"'))
    problems = _problems(copy)
    assert any("hx-alpha=1.0-2 (amd64) is not in Packages" in p for p in problems), problems
    assert any("hx-alpha=1.0-1 (amd64) is not in manifest.json" in p for p in problems), problems


def test_bundle_check_detects_the_kind_and_exits_2_naming_problems(copy: Path, tmp_path: Path) -> None:
    ok = CliRunner().invoke(main, ["bundle", "check", str(copy)])
    assert ok.exit_code == 0 and "apt bundle of smoke" in ok.output, ok.output
    (copy / apt_bundle.KEY).unlink()
    bad = CliRunner().invoke(main, ["bundle", "check", str(copy)])
    assert bad.exit_code == 2 and f"{apt_bundle.KEY}: missing" in bad.output, bad.output
    (tmp_path / "empty").mkdir()
    neither = CliRunner().invoke(main, ["bundle", "check", str(tmp_path / "empty")])
    assert neither.exit_code == 2 and "not a bundle this harness knows" in neither.output


def test_fetch_refuses_what_the_cache_does_not_serve_and_checks_digests(
    tmp_path: Path, debs: dict[str, Path], fake_cache: tuple[str, int]
) -> None:
    foreign = Installed("x", "1", "amd64", "http://example.org/x_1_amd64.deb", "a" * 64, 1)
    local = Installed("y", "1", "amd64", "", "", 0)
    with pytest.raises(HostError) as info:
        apt_bundle_build.fetch([foreign, local], tmp_path / "pool", address=fake_cache)
    assert "x=1: it came from http://example.org/" in str(info.value) and "y=1: apt on the node knew no" in str(
        info.value
    )
    uri = next(iter(debs))
    wrong = Installed("hx-alpha", "1.0-1", "amd64", uri, "0" * 64, 1)
    with pytest.raises(HostError, match=r"SHA-256 .* is not the 0000000000000000"):
        apt_bundle_build.fetch([wrong], tmp_path / "pool", address=fake_cache)
    assert not list((tmp_path / "pool").iterdir())


def test_build_refuses_an_output_that_is_not_empty(tmp_path: Path, debs: dict[str, Path]) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "something").write_text("x")
    with pytest.raises(UsageError, match="not an empty directory"):
        apt_bundle_build.build_from_record(_record(debs), tmp_path / "out")


def test_deb_names_are_unquoted() -> None:
    uri = "http://deb.debian.org/debian-security/pool/updates/main/a/apt/apt-utils_2.6.2%2bdeb12u1_amd64.deb"
    assert apt_bundle_build.deb_name(uri) == "apt-utils_2.6.2+deb12u1_amd64.deb"
    assert apt_bundle_build.debian_uri_problem(uri) is None
    assert apt_bundle_build.debian_uri_problem("https://deb.debian.org/debian/pool/x.deb") is not None


def test_validate_checks_an_offline_scenarios_bundle(copy: Path, tmp_path: Path) -> None:
    (tmp_path / "site.yml").write_text("- hosts: all\n  tasks: []\n")
    scenario = tmp_path / "offline.yml"
    scenario.write_text("name: smoke-offline\nnodes: [{name: mgmt01}]\noffline: {bundle: bundle}\n")
    ok = CliRunner().invoke(main, ["validate", str(scenario)])
    assert ok.exit_code == 0 and "apt bundle of smoke" in ok.output, ok.output
    (copy / apt_bundle.INRELEASE).write_text("not signed")
    bad = CliRunner().invoke(main, ["validate", str(scenario)])
    assert bad.exit_code == 2 and "InRelease: bad signature" in bad.output, bad.output


def _apt(tmp_path: Path, bundle_dir: Path, key: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """apt-get/apt-cache with a private configuration whose one source is the bundle (file: URI)."""
    etc = tmp_path / "etc"
    for d in (etc / "sources.list.d", etc / "preferences.d", etc / "apt.conf.d", tmp_path / "lists" / "partial"):
        d.mkdir(parents=True, exist_ok=True)
    (etc / "sources.list").write_text("")
    (etc / "sources.list.d" / "bundle.sources").write_text(
        f"Types: deb\nURIs: file:{bundle_dir}/\nSuites: ./\nSigned-By: {key}\n"
    )
    opts = [
        f"-oDir::Etc={etc}",
        f"-oDir::State::Lists={tmp_path / 'lists'}",
        f"-oDir::Cache={tmp_path / 'cache'}",
        "-oDir::State::status=/dev/null",
        "-oDebug::NoLocking=1",
        "-oAPT::Sandbox::User=root",
    ]
    return subprocess.run([argv[0], *opts, *argv[1:]], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(tools.which("apt-get") is None, reason="needs apt")
def test_apt_itself_takes_the_bundle_as_its_only_source(copy: Path, tmp_path: Path) -> None:
    update = _apt(tmp_path, copy, copy / apt_bundle.KEY, "apt-get", "update", "--error-on=any")
    assert update.returncode == 0, update.stdout + update.stderr
    policy = _apt(tmp_path, copy, copy / apt_bundle.KEY, "apt-cache", "policy", "hx-alpha", "hx-beta")
    assert "Candidate: 1.0-1" in policy.stdout and "Candidate: 2.3+deb12u1" in policy.stdout, policy.stdout
    # Signed by another key than the one apt is given: apt refuses the repository.
    other = tmp_path / "other"
    shutil.copytree(copy, other)
    apt_bundle_build.sign(other, "another key")
    refused = _apt(tmp_path / "refused", copy, other / apt_bundle.KEY, "apt-get", "update", "--error-on=any")
    assert refused.returncode != 0 and "NO_PUBKEY" in refused.stdout + refused.stderr, refused.stdout + refused.stderr


def test_a_record_of_nothing_beyond_the_box_is_an_empty_repository_apt_reads(
    debs: dict[str, Path], tmp_path: Path
) -> None:
    empty = apt_bundle_build.build_from_record(dataclasses.replace(_record(debs), packages=[]), tmp_path / "empty")
    assert empty.manifest.packages == [] and not list((tmp_path / "empty" / apt_bundle.POOL).iterdir())
    update = _apt(tmp_path / "apt", tmp_path / "empty", tmp_path / "empty" / apt_bundle.KEY, "apt-get", "update")
    assert update.returncode == 0, update.stdout + update.stderr
    policy = _apt(
        tmp_path / "apt", tmp_path / "empty", tmp_path / "empty" / apt_bundle.KEY, "apt-cache", "policy", "hx-alpha"
    )
    assert "Candidate" not in policy.stdout, policy.stdout
