from __future__ import annotations

import pytest

from harness import debootstrap

# Lines as debootstrap 1.0.128 prints them for bookworm (minbase plus --include), in order.
SAMPLE = """\
I: Retrieving InRelease
I: Checking Release signature
I: Valid Release signature (key id 4D64FEC119C2029067D6E791F8D2585B8783D481)
I: Retrieving Packages
I: Validating Packages
I: Resolving dependencies of required packages...
I: Checking component main on http://deb.debian.org/debian...
I: Retrieving adduser 3.134
I: Validating adduser 3.134
I: Retrieving libc6 2.36-9+deb12u10
I: Validating libc6 2.36-9+deb12u10
I: Retrieving bsdutils 1:2.38.1-5+deb12u3
I: Validating bsdutils 1:2.38.1-5+deb12u3
I: Chosen extractor for .deb packages: dpkg-deb
I: Extracting adduser...
I: Extracting libc6...
I: Installing core packages...
I: Unpacking required packages...
I: Unpacking adduser...
I: Unpacking libc6:amd64...
I: Configuring required packages...
I: Configuring libc6:amd64...
I: Unpacking the base system...
I: Unpacking linux-image-6.1.0-50-amd64...
I: Configuring the base system...
I: Configuring linux-image-6.1.0-50-amd64...
I: Configuring libnsl2:amd64...
I: Base system installed successfully.
"""


@pytest.mark.parametrize(
    ("line", "stage", "package"),
    [
        ("I: Retrieving libc6 2.36-9", "retrieving", "libc6"),
        ("I: Validating bsdutils 1:2.38.1-5+deb12u3", "validating", "bsdutils"),
        ("I: Extracting zlib1g...", "extracting", "zlib1g"),
        ("I: Unpacking libc6:amd64...", "unpacking", "libc6:amd64"),
        ("I: Configuring linux-image-6.1.0-50-amd64...", "configuring", "linux-image-6.1.0-50-amd64"),
        ("I: Configuring libstdc++6:amd64...  ", "configuring", "libstdc++6:amd64"),
        ("I: Unpacking the base system...", "unpacking the base system", None),
        ("I: Configuring required packages...", "configuring required packages", None),
        ("I: Installing core packages...", "installing core packages", None),
    ],
)
def test_parse_debootstrap_line(line: str, stage: str, package: str | None) -> None:
    assert debootstrap.parse_debootstrap_line(line) == debootstrap.DebootstrapLine(stage, package)


@pytest.mark.parametrize(
    "line",
    [
        "I: Retrieving InRelease ",
        "I: Retrieving Packages ",
        "I: Validating Packages ",
        "I: Checking Release signature",
        "I: Resolving dependencies of base packages...",
        "I: Checking component main on http://deb.debian.org/debian...",
        "I: Base system installed successfully.",
        "W: Failure trying to run: chroot ... mount -t proc proc /proc",
        "dpkg: warning: something",
        "",
    ],
)
def test_other_lines_are_not_progress(line: str) -> None:
    assert debootstrap.parse_debootstrap_line(line) is None


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_reports_each_stage_with_counts_and_elapsed_seconds() -> None:
    clock = FakeClock()
    messages: list[str] = []
    progress = debootstrap.DebootstrapProgress(messages.append, every=1000.0, clock=clock)
    for line in SAMPLE.splitlines():
        clock.now += 1.0
        progress(line)
    assert messages == [
        "debootstrap: retrieving packages, 8s",
        "debootstrap: extracting packages, 1 done, 15s",
        "debootstrap: installing core packages, 17s",
        "debootstrap: unpacking required packages, 18s",
        "debootstrap: configuring required packages, 21s",
        "debootstrap: unpacking the base system, 23s",
        "debootstrap: configuring the base system, 25s",
    ]
    assert progress.retrieved == 3
    assert progress.stage == "configuring the base system" and progress.done == 2
    assert progress.summary() == "debootstrap done: 3 packages in 28s"


def test_progress_within_a_stage_is_throttled() -> None:
    clock = FakeClock()
    messages: list[str] = []
    progress = debootstrap.DebootstrapProgress(messages.append, every=5.0, clock=clock)
    for i in range(20):
        clock.now += 1.0
        progress(f"I: Retrieving pkg{i} 1.0")
        progress(f"I: Validating pkg{i} 1.0")
    assert messages == [
        "debootstrap: retrieving packages, 1s",
        "debootstrap: retrieving packages, 5 done, 6s",
        "debootstrap: retrieving packages, 10 done, 11s",
        "debootstrap: retrieving packages, 15 done, 16s",
    ]
