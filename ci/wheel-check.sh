#!/usr/bin/env bash
# Check that the harness works installed from a wheel, away from this checkout: build the wheel
# from a copy of the source files, install it with its dependencies (PyPI, through pip's cache)
# into a fresh virtualenv in a temp dir, build the roles' collection (offline), then render and
# validate a scenario written in another temp dir that uses the collection's roles by FQCN.
# Leaves nothing behind.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
python=${PYTHON:-python3}
started=$SECONDS
tmp=$(mktemp -d "${TMPDIR:-/tmp}/harness-wheel-check.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail() { echo "ci/wheel-check.sh: $*" >&2; exit 1; }

# The wheel, built from the tracked and new (not ignored) files only: no build/ or *.egg-info of
# the checkout can leak into it.
mkdir "$tmp/src" "$tmp/dist"
git ls-files -z --cached --others --exclude-standard \
  | while IFS= read -r -d '' f; do if [ -e "$f" ] || [ -L "$f" ]; then printf '%s\0' "$f"; fi; done \
  | tar --null -T - -cf - | tar -xf - -C "$tmp/src"
.venv/bin/pip wheel -q --no-deps -w "$tmp/dist" "$tmp/src"
wheel=$(echo "$tmp"/dist/gpu_cluster_harness-*.whl)
[ -f "$wheel" ] || fail "no wheel was built"

"$python" -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install -q --disable-pip-version-check "$wheel"
echo "wheel installed: $(basename "$wheel") ($((SECONDS - started))s)"

# The roles as the harness.cluster collection, at pyproject.toml's version; nothing else in it.
version=$("$tmp/venv/bin/python" - "$root" <<'EOF'
import pathlib, sys, tomllib, yaml
root = pathlib.Path(sys.argv[1])
py = tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"]
galaxy = str(yaml.safe_load((root / "galaxy.yml").read_text())["version"])
if py != galaxy:
    sys.exit(f"galaxy.yml version {galaxy} differs from pyproject.toml's {py}")
print(py)
EOF
)
"$tmp/venv/bin/ansible-galaxy" collection build --output-path "$tmp/collection" "$root" >/dev/null
tarball=$tmp/collection/harness-cluster-$version.tar.gz
[ -f "$tarball" ] || fail "no collection tarball harness-cluster-$version.tar.gz"
tar -tzf "$tarball" >"$tmp/contents"
grep -qx 'roles/slurm/tasks/main.yml' "$tmp/contents" || fail "the collection lacks roles/slurm/tasks/main.yml"
if grep -Ev '^(roles/|meta/|README\.md$|MANIFEST\.json$|FILES\.json$)' "$tmp/contents"; then
  fail "the collection carries files beyond roles/, meta/ and README.md (galaxy.yml build_ignore)"
fi

# A site's own scenario in a directory of its own; its requirements file installs the collection
# (offline, into a temp cache) and its playbook names the roles by FQCN.
mkdir "$tmp/site"
cd "$tmp/site"
cat >scenario.yml <<'EOF'
name: wheel-check
nodes:
  - name: node01
    groups: [gpu]
    cpus: 1
    memory: 512
provision:
  playbook: site.yml
  collections: requirements.yml
EOF
printf 'collections:\n  - name: %s\n    type: file\n' "$tarball" >requirements.yml
cat >site.yml <<'EOF'
- name: Roles of the harness.cluster collection by FQCN
  hosts: all
  roles:
    - harness.cluster.common
    - harness.cluster.slurm
    - harness.cluster.nvidia_driver
EOF
export HARNESS_CACHE_DIR=$tmp/cache
data=$("$tmp/venv/bin/python" -c 'import harness.paths as p; print(p.TEMPLATES_DIR)')
case $data in
  "$tmp/venv/"*) ;;
  *) fail "the installed harness reads its template from $data, not from the wheel" ;;
esac
"$tmp/venv/bin/harness" render scenario.yml >Vagrantfile
grep -q '^Vagrant.configure("2")' Vagrantfile || fail "harness render printed no Vagrantfile"
# The box version comes from the debian12 recipe's content: the recipe shipped too.
grep -q 'config.vm.box_version = "1\.0\.[0-9]*"' Vagrantfile || fail "the Vagrantfile has no box version (recipe missing?)"
"$tmp/venv/bin/harness" box list --help >/dev/null
"$tmp/venv/bin/harness" validate scenario.yml >/dev/null || fail "harness validate: the collection's roles do not resolve"

echo "wheel check passed in $((SECONDS - started))s: $(basename "$wheel"), $(basename "$tarball")"
