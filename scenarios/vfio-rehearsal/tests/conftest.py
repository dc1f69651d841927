"""Helpers for the vfio-rehearsal scenario's tests: the stand-in device's ids and a way to run
the harness's own GPU discovery (harness/gpus.py, standard library only) inside the VM."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

import harness.gpus

# The stand-in for a GPU: the VM's virtio memory balloon (see ../scenario.yml); QEMU's edu device
# would be "1234" / "1234:11e8".
STANDIN_VENDOR = "1af4"
STANDIN_IDS = "1af4:1045"
NODE = "host01"

_DISCOVER = """
import json, sys
from pathlib import Path
sys.path.insert(0, "/tmp/hx-gpus")
import gpus
d = gpus.discover(Path("/sys"), frozenset({%r}))
print(json.dumps({"discovery": d.to_json(), "iommu_enabled": d.iommu_enabled,
                  "gpus": [g.address for g in d.gpus]}))
"""


@pytest.fixture(scope="session")
def vm_discovery(cluster: Any) -> dict[str, Any]:
    """What harness/gpus.py's discover() finds for the stand-in's vendor inside the VM, as JSON."""
    src = Path(harness.gpus.__file__)
    cluster.check(NODE, "mkdir -p /tmp/hx-gpus")
    copied = subprocess.run(
        ["scp", "-q", "-F", str(cluster.ssh_config), str(src), f"{NODE}:/tmp/hx-gpus/gpus.py"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if copied.returncode != 0:
        pytest.fail(f"scp of {src} to {NODE} failed: {copied.stderr.strip()}", pytrace=False)
    out = cluster.check(NODE, f"python3 - <<'PY'\n{_DISCOVER % STANDIN_VENDOR}\nPY")
    result: dict[str, Any] = json.loads(out)
    return result
