#!/usr/bin/env bash
# The package and the Space as users get them: build the wheel and sdist, install the wheel into fresh
# virtualenvs (core only, then [app]) and use it from another folder; assemble the Space folder and start
# it from its own requirements.txt. Needs the project's .venv (bash scripts/test.sh makes it).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
WORK=$(mktemp -d /tmp/pecmae-packaging.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
export GRADIO_ANALYTICS_ENABLED=False HF_HUB_DISABLE_TELEMETRY=1 MPLBACKEND=Agg HF_HOME="$WORK/hf-home"
PIP_FLAGS="-q --disable-pip-version-check"

echo "== build wheel + sdist"
.venv/bin/python -m build -q --wheel --sdist --outdir "$WORK/dist" . >/dev/null
WHEEL=$(ls "$WORK"/dist/*.whl)
ls -l "$WORK"/dist

echo "== core install (no extras) from the wheel, used from another folder"
python3 -m venv "$WORK/core"
"$WORK/core/bin/pip" install $PIP_FLAGS torch==2.13.0 "$WHEEL"
cd "$WORK"
TIMEFORMAT="pecmae --help: %R s"
time "$WORK/core/bin/pecmae" --help >/dev/null
"$WORK/core/bin/pecmae" --version
HF_HUB_OFFLINE=1 "$WORK/core/bin/python" - "$ROOT/examples/violin.wav" <<'PY'
import sys

import pecmae_hub
from pecmae_hub import PECMAE

assert "site-packages" in pecmae_hub.__file__, pecmae_hub.__file__
model = PECMAE.from_pretrained("gm-solos", device="cpu")
pred = model.classify(sys.argv[1])
print(f"wheel, core only: {sys.argv[1]} -> {pred.label} ({pred.confidence:.3f})")
assert pred.label == "violin", pred.label
PY
set +e
out=$("$WORK/core/bin/pecmae" train --features "$WORK" --split-train x.tsv --out "$WORK/h" 2>&1)
code=$?
set -e
echo "$out" | tail -n 1
[ "$code" -ne 0 ] && echo "$out" | grep -q "pecmae-hub\[train\]" || { echo "missing-extra message not shown"; exit 1; }

echo "== [app] install from the wheel: start the app from the installed package"
"$WORK/core/bin/pip" install $PIP_FLAGS torch==2.13.0 "$WHEEL[app]"
PORT=$("$WORK/core/bin/python" -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
GRADIO_SERVER_PORT=$PORT PECMAE_PREWARM=0 "$WORK/core/bin/pecmae" app >"$WORK/app.log" 2>&1 &
"$WORK/core/bin/python" "$ROOT/scripts/ping_app.py" "http://127.0.0.1:$PORT" "$ROOT/examples/violin.wav" violin \
  || { tail -n 30 "$WORK/app.log"; exit 1; }
kill %1 2>/dev/null || true

echo "== the Space folder, started from its own requirements.txt"
cd "$ROOT"
.venv/bin/python scripts/build_space.py "$WORK/space"
python3 -m venv "$WORK/space-venv"
# the Space pins the torch ZeroGPU documents; here the local CPU build of torch stands in for that one line
grep -v '^torch' "$WORK/space/requirements.txt" > "$WORK/space-requirements-cpu.txt"
"$WORK/space-venv/bin/pip" install $PIP_FLAGS torch==2.13.0 -r "$WORK/space-requirements-cpu.txt"
PORT=$("$WORK/core/bin/python" -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
(cd "$WORK/space" && GRADIO_SERVER_PORT=$PORT PECMAE_PREWARM=0 "$WORK/space-venv/bin/python" app.py >"$WORK/space.log" 2>&1) &
"$WORK/space-venv/bin/python" "$ROOT/scripts/ping_app.py" "http://127.0.0.1:$PORT" "$WORK/space/examples/violin.wav" violin \
  || { tail -n 30 "$WORK/space.log"; exit 1; }
echo "packaging checks passed"
