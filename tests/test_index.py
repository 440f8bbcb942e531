import shutil
import subprocess

import pytest

from avshards.index import format_index, parse_index, scan_tar, write_index


def test_index_offsets_point_at_member_data(synth_shards):
    tar = next((synth_shards([3])).glob("*.tar"))
    samples = parse_index(open(write_index(str(tar))).read())
    assert [s.key for s in samples] == ["clip000000", "clip000001", "clip000002"]
    data = tar.read_bytes()
    for s in samples:
        off, size = s.members["json"]
        assert data[off:off + size].startswith(b"{") and b'"key": "%s"' % s.key.encode() in data[off:off + size]
        off, size = s.members["mjpeg"]
        assert data[off:off + 2] == b"\xff\xd8" and data[off + size - 2:off + size] == b"\xff\xd9"
    assert format_index(scan_tar(str(tar))) == format_index(samples)


@pytest.mark.skipif(shutil.which("tar") is None, reason="GNU tar not installed")
def test_index_agrees_with_gnu_tar_block_numbers(synth_shards):
    tar = next((synth_shards([2])).glob("*.tar"))
    out = subprocess.run(["tar", "--list", "--block-num", "--file", str(tar)], capture_output=True, text=True).stdout
    headers = {line.split(": ", 1)[1]: int(line.split(":")[0].split()[1]) * 512 for line in out.splitlines()}
    for s in scan_tar(str(tar)):
        for ext, (off, _) in s.members.items():
            assert headers[f"{s.key}.{ext}"] + 512 == off
