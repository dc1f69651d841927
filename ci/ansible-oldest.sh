#!/usr/bin/env bash
# A small virtualenv with the oldest ansible-core the harness supports, for the unit tests that run
# real ansible-playbook (pytest -m ansible). It is layered over .venv (a .pth adds .venv's
# site-packages after its own), so it holds ansible-core alone: seconds, not a second install of
# everything. The harness finds ansible-playbook beside the Python that runs it (harness/tools.py),
# so `.venv-ansible-oldest/bin/python -m pytest` runs this ansible-core. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
version=${ANSIBLE_CORE_OLDEST:-2.17.14}
# What the overlay holds besides ansible-core: the dependencies whose range in this ansible-core is
# narrower than the newest's, so .venv's copy may be too new (ansible-galaxy 2.17 refuses
# resolvelib >= 1.1, which a fresh .venv on 2.19 gets).
extra=("resolvelib>=0.5.3,<1.1.0")
venv=.venv-ansible-oldest
stamp="$venv/.harness-overlay"
want="ansible-core==$version ${extra[*]}"
if [ -x "$venv/bin/ansible-playbook" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
rm -rf "$venv"
.venv/bin/python -m venv --without-pip "$venv"
base=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
own=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "import site; site.addsitedir('$base')" >"$own/zz_harness_base.pth"
# --ignore-installed: .venv's ansible-core is visible here too. --no-deps: its dependencies
# (jinja2, PyYAML, cryptography, resolvelib, ...) are .venv's.
.venv/bin/pip --python "$venv/bin/python" install -q --no-deps --ignore-installed "ansible-core==$version" "${extra[@]}"
# Every requirement of this ansible-core must be met by the overlay or .venv beneath it.
"$venv/bin/python" - "$version" <<'PY'
import sys
from importlib.metadata import requires, version
from packaging.requirements import Requirement
bad = []
for line in requires("ansible-core") or []:
    req = Requirement(line)
    if req.marker and not req.marker.evaluate():
        continue
    try:
        have = version(req.name)
    except Exception:
        bad.append(f"{req} (missing)")
        continue
    if not req.specifier.contains(have, prereleases=True):
        bad.append(f"{req} (have {have})")
if bad:
    sys.exit(f"ci/ansible-oldest.sh: ansible-core {sys.argv[1]} needs " + ", ".join(bad) + ": add them to extra=()")
PY
echo "$want" >"$stamp"
"$venv/bin/ansible-playbook" --version | head -1
