"""Shared fixtures: the real public media (fetched once, cached) and tiny synthetic shards."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FETCH = REPO / "tools" / "fetch-public-media.sh"
sys.path.insert(0, str(Path(__file__).parent))  # tests/synth.py and friends


@pytest.fixture(scope="session")
def media() -> Path:
    """Folder of real third-party media (see ../shared/media/fetch-public-media.sh)."""
    out = Path(os.environ.get("AVSHARDS_MEDIA", Path.home() / ".cache" / "avshards-media"))
    if not (out / ".complete").exists():
        subprocess.run(["bash", str(FETCH), str(out)], check=True,
                       env={**os.environ, "PYTHON": sys.executable})
    return out


@pytest.fixture
def synth_shards(tmp_path):
    """Factory: ``synth_shards([3, 2])`` writes two shards of 3 and 2 clips, returns the folder."""
    from synth import write_synthetic_shards

    def make(counts, seconds=2.0, **kw):
        out = tmp_path / f"synth{len(list(tmp_path.iterdir()))}"
        write_synthetic_shards(out, counts, seconds, **kw)
        return out

    return make
