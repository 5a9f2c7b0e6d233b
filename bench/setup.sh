#!/usr/bin/env bash
# Create the benchmark venv .venv-bench (gitignored) with advlab and its peer libraries.
#
#   bash bench/setup.sh            # create it if missing (or if a previous setup did not finish)
#   FORCE=1 bash bench/setup.sh    # rebuild from scratch
#
# torch==2.13.0 goes in FIRST: the exact pin takes the local CPU wheel, and every later install
# then finds torch satisfied. torchattacks is installed with --no-deps because its metadata asks
# for torchvision (which would pull another torch); its real runtime needs are scipy, tqdm and
# requests. At the end we check that the torch in the venv is still 2.13.0+cpu.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV_BENCH:-$ROOT/.venv-bench}"
PYTHON="${PYTHON:-python3}"
STAMP="$VENV/.bench-ready"

# Versions the numbers in bench/README.md were measured with.
TORCH_VERSION="2.13.0"
TORCHATTACKS_VERSION="3.5.1"
ART_VERSION="1.20.1"
FOOLBOX_VERSION="3.3.4"
EAGERPY_VERSION="0.30.0"

if [[ "${FORCE:-0}" == "1" ]]; then
    rm -rf "$VENV"
fi
# The stamp holds a hash of this script and of pyproject.toml: a change to either rebuilds.
WANT_STAMP="$(cat "${BASH_SOURCE[0]}" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT_STAMP" ]]; then
    echo "bench: $VENV is ready (FORCE=1 bash bench/setup.sh to rebuild)"
    exit 0
fi

echo "bench: creating $VENV"
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
pip_install() {
    # (the local index mirrors print one "Location ... is ignored" warning per package: noise)
    "$VENV/bin/python" -m pip install --quiet "$@" 2> >(grep -v "is ignored: it is neither" >&2)
}

pip_install "torch==$TORCH_VERSION"
pip_install -e "$ROOT[signals]"  # signals: the sktime wheel's .ts files (bench_square_signal.py)
# (multiprocess: ART's AutoAttack imports it, and ART's metadata does not ask for it)
pip_install scipy tqdm requests multiprocess
pip_install "adversarial-robustness-toolbox==$ART_VERSION" \
    "foolbox==$FOOLBOX_VERSION" "eagerpy==$EAGERPY_VERSION"
# last, so that no later resolver run complains about the torchvision it does not get
pip_install --no-deps "torchattacks==$TORCHATTACKS_VERSION"

# None of the peers may have replaced torch or brought torchvision / a CUDA build with them.
"$VENV/bin/python" - "$TORCH_VERSION" <<'EOF'
import importlib.metadata as md
import sys

want = sys.argv[1]
torch_version = md.version("torch")
if not torch_version.startswith(want) or "+cpu" not in torch_version:
    sys.exit(f"bench setup: expected torch {want}+cpu in the venv, found {torch_version}")
bad = sorted(d.metadata["Name"] for d in md.distributions()
             if d.metadata["Name"].lower().startswith(("nvidia-", "torchvision", "triton")))
if bad:
    sys.exit(f"bench setup: unexpected packages pulled in: {', '.join(bad)}")
import advlab, art, eagerpy, foolbox, torch, torchattacks  # noqa: E401,F401  (imports work)
print(f"bench: torch {torch.__version__}, torchattacks {torchattacks.__version__}, "
      f"art {art.__version__}, foolbox {foolbox.__version__}, eagerpy {eagerpy.__version__}")
EOF
"$VENV/bin/python" -m pip list --format=freeze > "$VENV/pip-freeze.txt"
echo "$WANT_STAMP" > "$STAMP"
echo "bench: $VENV ready; package list in $VENV/pip-freeze.txt"
