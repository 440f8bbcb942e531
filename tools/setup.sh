#!/usr/bin/env bash
# Creates or reuses the virtual environment in .venv with this package (editable, with the extras
# named in $EXTRAS) at the exact tested versions of constraints.txt (torch 2.11.0 / torchvision 0.26.0
# / torchaudio 2.11.0 ...), and Debian's ffmpeg. Idempotent and quiet when done.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
EXTRAS=${EXTRAS:-dev,s3,dali,ray}
STAMP="$VENV/.installed-$(cat pyproject.toml constraints.txt tools/setup.sh | sha1sum | cut -c1-12)-${EXTRAS//,/_}"

if ! command -v ffmpeg >/dev/null || ! command -v ffprobe >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing Debian's ffmpeg (apt-get)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null
  else
    echo "setup: ffmpeg/ffprobe not found and cannot be installed here (not root or no apt-get)." >&2
    echo "       Install it yourself: sudo apt-get install ffmpeg" >&2
    exit 1
  fi
fi

[ -f "$STAMP" ] && exit 0
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
[ -x "$VENV/bin/python" ] || { echo "setup: creating $VENV with $PY"; "$PY" -m venv "$VENV"; }
echo "setup: installing crisscross-av[$EXTRAS] at the versions of constraints.txt (first time: a few minutes)"
"$VENV/bin/pip" install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
"$VENV/bin/pip" install -q -c constraints.txt torch torchvision torchaudio 2>&1 | grep -v "is ignored" || true
"$VENV/bin/pip" install -q -c constraints.txt -e ".[$EXTRAS]" 2>&1 | grep -v "is ignored" || true
"$VENV/bin/python" -c "import torch, torchvision, torchaudio, webdataset, avshards, crisscross" \
  || { echo "setup: the environment in $VENV is incomplete; delete it and run again" >&2; exit 1; }
rm -f "$VENV"/.installed-*; touch "$STAMP"
