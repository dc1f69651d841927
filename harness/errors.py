"""Error hierarchy. Library code raises these; only the CLI turns them into exit codes."""

from __future__ import annotations


class HarnessError(Exception):
    """Base class: the message says what went wrong and what to do about it."""

    exit_code = 1


class SpecError(HarnessError):
    """The scenario (or another user input file) is invalid. Carries every problem found."""

    exit_code = 2

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{source}: {len(self.problems)} problem(s)\n{lines}")


class UsageError(HarnessError):
    """The command was asked for something that cannot be done as asked (bad node name...)."""

    exit_code = 2


class HostError(HarnessError):
    """The host lacks something (a package, a daemon, memory, a free GPU)."""

    exit_code = 3


class BoxError(HarnessError):
    """Building or registering a box failed."""

    exit_code = 3


class ProviderError(HarnessError):
    """libvirt or Vagrant failed to create, query or remove machines."""

    exit_code = 10


class ProvisionError(HarnessError):
    """The provisioning playbook failed."""

    exit_code = 11


class IdempotenceError(HarnessError):
    """The second converge changed something."""

    exit_code = 12


class VerifyError(HarnessError):
    """The scenario's tests failed."""

    exit_code = 13


class DestroyError(HarnessError):
    """Teardown could not remove everything the run created."""

    exit_code = 14


class UnreachableError(HarnessError):
    """Nodes stopped answering and did not come back within the retries: an infrastructure failure
    (a loaded host, a paused or dead VM), never a verdict about the roles or the tests."""

    exit_code = 15


class PromotionRefused(HarnessError):
    """`harness promote` found no green rehearsal of exactly the content it would apply."""

    exit_code = 16


class Interrupted(HarnessError):
    """The user interrupted (Ctrl-C) or the process got SIGTERM."""

    exit_code = 130


# Every exit code of the `harness` command and what it means: 0, then the codes of the classes
# above. The CLI's --help table is made from it, and docs/exit-codes.md lists it
# (tests/unit/test_docs.py holds the two together).
EXIT_CODES: dict[int, str] = {
    0: "success",
    HarnessError.exit_code: "other failure",
    SpecError.exit_code: "bad input (scenario, args)",  # and UsageError
    HostError.exit_code: "host not ready (packages, box, memory, GPUs)",  # and BoxError
    ProviderError.exit_code: "up failed (Vagrant/libvirt)",
    ProvisionError.exit_code: "provision failed",
    IdempotenceError.exit_code: "idempotence failed",
    VerifyError.exit_code: "verify failed",
    DestroyError.exit_code: "destroy left something behind",
    UnreachableError.exit_code: "nodes unreachable (infrastructure, after retries; not about the roles)",
    PromotionRefused.exit_code: "promote refused: no green rehearsal",
    Interrupted.exit_code: "interrupted",
}
