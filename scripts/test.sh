#!/usr/bin/env bash
# Install everything the test suite needs (Debian packages + a virtualenv), then lint, type-check and test.
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v apt-get >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  # FluidSynth + the four SoundFont banks (GM-Solos rendering), Chromium (browser tests of the app),
  # espeak-ng (speech clips of the out-of-domain tests)
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    fluidsynth libfluidsynth3 fluid-soundfont-gm musescore-general-soundfont-small csound-soundfont \
    timgm6mb-soundfont chromium espeak-ng >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
# torch==2.13.0 in the same command as everything else keeps the CPU build (see docs/DEVELOPING.md)
.venv/bin/pip install -q --disable-pip-version-check torch==2.13.0 -e ".[test]"

echo "== lint (ruff) and type check (mypy)"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy

echo "== tests"
export GRADIO_ANALYTICS_ENABLED=False HF_HUB_DISABLE_TELEMETRY=1 MPLBACKEND=Agg
exec .venv/bin/python -m pytest -q "$@"
