"""The two-view sampler: properties of every relaxation mode over many random clips."""

import numpy as np
import pytest

from crisscross.data.choices import MODES
from crisscross.data.views import ViewStarts, sample_views

VF, AS, SPF = 8, 32000, 1000          # defaults: 8 frames, 2 s of audio, 1000 samples per frame


def random_clips(n, seed=0, min_seconds=4.5, max_seconds=12.0):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        frames = int(rng.integers(int(min_seconds * 16), int(max_seconds * 16)))
        # audio a little shorter or longer than the video, as real builds give
        samples = frames * SPF + int(rng.integers(-3000, 3000))
        yield frames, samples


def usable(frames, samples):
    return min(frames - VF, (samples - AS) // SPF)


@pytest.mark.parametrize("mode", MODES)
def test_starts_in_range_and_windows_fit(mode):
    rng = np.random.default_rng(1)
    for frames, samples in random_clips(300):
        s = sample_views(frames, samples, mode, rng)
        assert isinstance(s, ViewStarts)
        assert min(s) >= 0
        assert s.v1 + VF <= frames and s.v2 + VF <= frames
        assert s.a1 + AS <= samples and s.a2 + AS <= samples
        assert s.a1 == s.v1 * SPF            # view 1 is synchronous in every mode


@pytest.mark.parametrize("mode,dv,da", [("none", 0, 0), ("mild", VF // 2, AS // 2), ("medium", VF, AS)])
def test_fixed_offsets(mode, dv, da):
    rng = np.random.default_rng(2)
    for frames, samples in random_clips(200):
        s = sample_views(frames, samples, mode, rng)
        assert (s.v2 - s.v1, s.a2 - s.a1) == (dv, da)


def test_extreme_offsets_by_half_the_room_the_windows_leave():
    rng = np.random.default_rng(3)
    ten_seconds = [sample_views(160, 160000, "extreme", rng) for _ in range(1000)]
    assert {s.v2 - s.v1 for s in ten_seconds} == {48}            # 3 s, as the official code
    starts = [s.v1 for s in ten_seconds]
    assert min(starts) == 0 and max(starts) == 128 - 48         # view 2's window still fits
    for frames, samples in random_clips(300):
        s = sample_views(frames, samples, "extreme", rng)
        u = usable(frames, samples)
        assert s.v2 - s.v1 == max(0, u - AS // SPF) // 2
        assert s.a2 == s.v2 * SPF                # synchronous second view


def test_mixed_is_independent_and_synchronous():
    rng = np.random.default_rng(4)
    draws = [sample_views(160, 160000, "mixed", rng) for _ in range(2000)]
    diffs = np.array([d.v2 - d.v1 for d in draws])
    assert (diffs > 0).mean() == pytest.approx(0.5, abs=0.05)
    assert all(d.a2 == d.v2 * SPF for d in draws)
    starts = np.array([d.v1 for d in draws])
    assert starts.min() == 0 and starts.max() == 160 - 32   # whole usable range reached


@pytest.mark.parametrize("mode", MODES)
def test_deterministic_for_a_seed(mode):
    a = [sample_views(200, 200000, mode, np.random.default_rng(7)) for _ in range(3)]
    assert a[0] == a[1] == a[2]
    many = {sample_views(200, 200000, mode, np.random.default_rng(s)) for s in range(50)}
    assert len(many) > 5


@pytest.mark.parametrize("mode", MODES)
def test_short_clip_starts_at_zero_and_keeps_offsets(mode):
    """A 1 s clip cannot hold a 2 s audio window: starts clamp to 0, the loader pads."""
    rng = np.random.default_rng(5)
    for _ in range(20):
        s = sample_views(16, 16000, mode, rng)
        expected = {"mild": (0, 4, 0, 16000), "medium": (0, 8, 0, 32000)}.get(mode, (0, 0, 0, 0))
        assert tuple(s) == expected


def test_unknown_mode_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown view mode 'wild'.*mild"):
        sample_views(100, 100000, "wild", np.random.default_rng())
