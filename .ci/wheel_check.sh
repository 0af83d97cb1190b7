#!/usr/bin/env bash
# The package as `pip install` users get it: build the wheel, install it with only its declared dependencies
# (versions constrained to the tested lock, requirements.txt) into a fresh venv, and run it outside the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
.venv/bin/python -m pip wheel -q --no-deps --no-build-isolation -w "$tmp/dist" .
python3 -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install -q --upgrade pip
wheel=$(ls "$tmp"/dist/dalle-*.whl)
"$tmp/venv/bin/python" -m pip install -q "$wheel[serve]" -c requirements.txt
.venv/bin/python .ci/tiny_checkpoint.py "$tmp/tiny" > /dev/null
cd "$tmp"  # nothing of the checkout is importable from here
test "$("$tmp/venv/bin/python" -c 'import dalle, os; print(os.path.dirname(dalle.__file__))')" != "$repo/dalle"
"$tmp/venv/bin/dalle" --version
"$tmp/venv/bin/dalle" config --config shapes_tiny > config.json
grep -q '"shapes_tiny_decoder_only"' config.json
"$tmp/venv/bin/dalle" config list | grep -q '^eval/shapes'
"$tmp/venv/bin/dalle" generate "a red circle" --checkpoint "$tmp/tiny/model" --n 1 --out "$tmp/grid.png"
test -s "$tmp/grid.png"
echo "wheel check: $(basename "$wheel") installs and runs outside the checkout"
