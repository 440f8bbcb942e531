"""Per-shard sample index in DALI's ``wds2idx`` format (v1.2), written beside each shard.

Line 1: ``v1.2 N`` (N samples). Then one line per sample: for each member
``ext offset size name`` joined by spaces, where ``offset`` is the byte offset of the member's data
(not its header) in the tar. DALI's ``readers.webdataset(index_paths=...)`` reads it as is, and
our reader uses it for byte-range access (start mid-shard, resume, split one shard over workers).
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass

INDEX_VERSION = "v1.2"


@dataclass(frozen=True)
class IndexedSample:
    key: str
    members: dict[str, tuple[int, int]]   # ext -> (data offset, size)

    @property
    def start(self) -> int:
        """Byte offset of the first member's tar header."""
        return min(off for off, _ in self.members.values()) - 512

    @property
    def end(self) -> int:
        """Byte offset just past the last member's data, padded to a tar block."""
        off, size = max(self.members.values())
        return off + (size + 511) // 512 * 512


def split_name(name: str) -> tuple[str, str]:
    """webdataset's rule: the key runs up to the first dot of the basename."""
    slash = name.rfind("/") + 1
    dot = name.find(".", slash)
    return (name, "") if dot < 0 else (name[:dot], name[dot + 1:])


def scan_tar(path: str) -> list[IndexedSample]:
    """Index an existing tar (regular members only), grouping consecutive members by key."""
    samples: list[IndexedSample] = []
    with tarfile.open(path) as tar:
        for m in tar:
            if not m.isreg():
                continue
            key, ext = split_name(m.name)
            if not key or key.endswith("/"):
                continue
            if samples and samples[-1].key == key:
                samples[-1].members[ext] = (m.offset_data, m.size)
            else:
                samples.append(IndexedSample(key, {ext: (m.offset_data, m.size)}))
    return samples


def format_index(samples: list[IndexedSample]) -> str:
    lines = [f"{INDEX_VERSION} {len(samples)}"]
    for s in samples:
        lines.append(" ".join(f"{ext} {off} {size} {s.key}.{ext}" for ext, (off, size) in s.members.items()))
    return "\n".join(lines) + "\n"


def parse_index(text: str) -> list[IndexedSample]:
    """Parse a wds2idx v1.2 index; raises ValueError naming the problem."""
    lines = text.splitlines()
    head = lines[0].split() if lines else []
    if len(head) != 2 or head[0] != INDEX_VERSION:
        raise ValueError(f"not a {INDEX_VERSION} webdataset index (first line {lines[:1]})")
    samples = []
    for line in lines[1:int(head[1]) + 1]:
        parts = line.split()
        members = {}
        for i in range(0, len(parts), 4):
            ext, off, size, name = parts[i:i + 4]
            members[ext] = (int(off), int(size))
        samples.append(IndexedSample(split_name(parts[3])[0], members))
    return samples


def write_index(tar_path: str, idx_path: str | None = None) -> str:
    """Write ``NAME.idx`` beside ``NAME.tar`` (or at ``idx_path``); return its path."""
    idx_path = idx_path or index_path(tar_path)
    with open(idx_path, "w") as f:
        f.write(format_index(scan_tar(tar_path)))
    return idx_path


def index_path(tar_path: str) -> str:
    """``shards-000001.tar`` -> ``shards-000001.idx`` (also for URLs)."""
    return tar_path[:-4] + ".idx" if tar_path.endswith(".tar") else tar_path + ".idx"
