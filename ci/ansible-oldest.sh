#!/usr/bin/env bash
# A small virtualenv with the oldest ansible-core the harness supports, for the unit tests that run
# real ansible-playbook (pytest -m ansible). It is layered over .venv (a .pth adds .venv's
# site-packages after its own), so it holds ansible-core alone: seconds, not a second install of
# everything. The harness finds ansible-playbook beside the Python that runs it (harness/tools.py),
# so `.venv-ansible-oldest/bin/python -m pytest` runs this ansible-core. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
version=${ANSIBLE_CORE_OLDEST:-2.17.14}
venv=.venv-ansible-oldest
if [ -x "$venv/bin/ansible-playbook" ] && "$venv/bin/ansible-playbook" --version | grep -q "core $version\]"; then
  exit 0
fi
rm -rf "$venv"
.venv/bin/python -m venv --without-pip "$venv"
base=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
own=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "import site; site.addsitedir('$base')" >"$own/zz_harness_base.pth"
# --ignore-installed: .venv's ansible-core is visible here too. --no-deps: its dependencies
# (jinja2, PyYAML, cryptography, resolvelib, ...) are .venv's.
.venv/bin/pip --python "$venv/bin/python" install -q --no-deps --ignore-installed "ansible-core==$version"
"$venv/bin/ansible-playbook" --version | head -1
