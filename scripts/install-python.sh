#!/usr/bin/env bash
# Installs `import albef` for good: builds the module (scripts/build.sh) and
# copies the package build/python/albef into the interpreter's site-packages
# (--user: the user's own; default: the system's, which needs root).
#   scripts/install-python.sh [--user]      PYTHON=/path/to/python3 to choose another interpreter
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-/usr/bin/python3}
scripts/build.sh
package=build/python/albef
ls "$package"/_albef*.so >/dev/null 2>&1 || { echo "install-python: $package has no module (is pybind11-dev installed?)" >&2; exit 1; }
if [ "${1:-}" = "--user" ]; then
  target=$("$python" -c 'import site; print(site.getusersitepackages())')
else
  target=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
fi
mkdir -p "$target"
rm -rf "$target/albef.tmp" && cp -r "$package" "$target/albef.tmp"
rm -rf "$target/albef" && mv "$target/albef.tmp" "$target/albef"
# Checked from another folder, so that the installed copy is the one imported.
(cd / && "$python" -c 'import albef; print("install-python: albef", albef.__version__, "in", albef.__path__[0])')
