from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from harness import bundle


def _write(root: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)


def test_read_sums_takes_text_and_binary_mode_lines_and_reports_bad_ones_with_their_line() -> None:
    good = hashlib.sha256(b"a").hexdigest()
    lines = ["# made by sha256sum", f"{good}  a.bin", f"{good.upper()} *./dir/b.bin", "", "not a sum line"]
    text = "\n".join([*lines, f"{good}  ../escape", f"{good}  a.bin"]) + "\n"
    sums, problems = bundle.read_sums(text)
    assert sums == {"a.bin": good, "dir/b.bin": good}
    assert problems[0].startswith("SHA256SUMS line 5: expected '<64 hex digits>  <file>'")
    assert "line 6: '../escape' must not contain '.' or '..' parts" in problems[1]
    assert problems[2] == "SHA256SUMS line 7: a.bin is listed twice"


@pytest.mark.parametrize("name", ["/etc/passwd", "a/../b", "a\\b", " a", ""])
def test_relative_name_problem(name: str) -> None:
    assert bundle.relative_name_problem(name) is not None


def test_verify_files_reports_missing_mismatched_and_unlisted(tmp_path: Path) -> None:
    _write(tmp_path, {"ok.bin": b"ok", "bad.bin": b"tampered", "extra.bin": b"x", "sub/ok2": b"ok2"})
    sums = {
        "ok.bin": hashlib.sha256(b"ok").hexdigest(),
        "bad.bin": hashlib.sha256(b"original").hexdigest(),
        "gone.bin": hashlib.sha256(b"gone").hexdigest(),
        "sub/ok2": hashlib.sha256(b"ok2").hexdigest(),
    }
    (tmp_path / bundle.SUMS_FILE).write_text(bundle.sums_text(tmp_path, ["ok.bin"]))
    check = bundle.verify_files(tmp_path, sums)
    assert not check.ok
    assert check.missing == ("gone.bin",)
    assert [m.name for m in check.mismatched] == ["bad.bin"]
    assert check.unlisted == ("extra.bin",)  # SHA256SUMS itself is not a file to list
    assert check.verified == ("ok.bin", "sub/ok2") and check.bytes_verified == 5
    lines = bundle.describe(check, {"gone.bin": "download it again"})
    assert lines[0] == "gone.bin: listed in SHA256SUMS but missing; download it again"
    assert lines[1].startswith("bad.bin: SHA-256 is ") and "damaged or was replaced" in lines[1]
    assert lines[2].startswith("extra.bin: not listed in SHA256SUMS")


def test_sums_text_is_what_sha256sum_writes_and_reads_back(tmp_path: Path) -> None:
    _write(tmp_path, {"b": b"2", "a": b"1"})
    text = bundle.sums_text(tmp_path, ["b", "a"])
    assert text == f"{hashlib.sha256(b'1').hexdigest()}  a\n{hashlib.sha256(b'2').hexdigest()}  b\n"
    sums, problems = bundle.read_sums(text)
    assert not problems and bundle.verify_files(tmp_path, sums).ok


def test_a_changed_file_is_hashed_again(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"one")
    first = bundle.sha256_file(f)
    f.write_bytes(b"two, longer")
    assert bundle.sha256_file(f) != first == hashlib.sha256(b"one").hexdigest()


def test_a_file_that_cannot_be_read_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path, {"a": b"1"})
    sums = {"a": hashlib.sha256(b"1").hexdigest()}

    def refuse(path: Path) -> str:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(bundle, "sha256_file", refuse)
    check = bundle.verify_files(tmp_path, sums)
    assert not check.ok and bundle.describe(check) == ["a: cannot read it: Permission denied"]
