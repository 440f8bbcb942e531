"""Reading shards (minimal local version; the streaming reader replaces this module)."""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterator

import braceexpand
from webdataset import tariterators

from avshards.format import MANIFEST_NAME, AVClip


def shard_urls(url: str) -> list[str]:
    """The shard paths of a folder (its manifest, else its *.tar) or a brace pattern."""
    if os.path.isdir(url):
        manifest = os.path.join(url, MANIFEST_NAME)
        if os.path.exists(manifest):
            with open(manifest) as f:
                return [os.path.join(url, s["name"]) for s in json.load(f)["shards"]]
        return sorted(glob.glob(os.path.join(url, "*.tar")))
    return list(braceexpand.braceexpand(url))


def open_shards(url: str) -> Iterator[AVClip]:
    """Iterate the clips of the shards at ``url`` in order."""
    for path in shard_urls(url):
        with open(path, "rb") as stream:
            files = ({**f, "__url__": path} for f in tariterators.tar_file_iterator(stream))
            for sample in tariterators.group_by_keys(files):
                yield AVClip.from_sample(sample)
