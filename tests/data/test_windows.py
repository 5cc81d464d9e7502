import pytest

from neuromamba.data.windows import clip_frame_indices, clip_slice, clip_span, clip_starts


@pytest.mark.parametrize("n, length, within, between, starts", [
    (10, 3, 1, 1, [0, 1, 2, 3, 4, 5, 6, 7]),
    (10, 3, 1, 3, [0, 3, 6]),            # non-overlapping: between = span
    (10, 3, 2, 1, [0, 1, 2, 3, 4, 5]),   # span 5
    (10, 3, 2, 2, [0, 2, 4]),
    (10, 3, 3, 4, [0]),                  # span 7, next start 4 would end at 10 > 9
    (11, 3, 3, 4, [0, 4]),
    (4, 5, 1, 1, []),                    # run shorter than a clip: no clip, never a short one
    (20, 20, 1, 1, [0]),
])
def test_clip_starts_exact(n, length, within, between, starts):
    assert clip_starts(n, length, within, between) == starts


def test_frame_indices_and_slice_agree():
    for start, length, within in [(0, 3, 1), (4, 3, 2), (7, 5, 3)]:
        idx = clip_frame_indices(start, length, within)
        assert list(idx) == [start + within * k for k in range(length)]
        assert list(range(100)[clip_slice(start, length, within)]) == list(idx)
    assert clip_span(20, 2) == 39


def test_every_clip_has_full_length_and_fits():
    for n in range(1, 40):
        for length in (1, 2, 5):
            for within in (1, 2, 3):
                for between in (1, 2, 5):
                    for s in clip_starts(n, length, within, between):
                        idx = clip_frame_indices(s, length, within)
                        assert len(idx) == length and idx[-1] < n


@pytest.mark.parametrize("bad", [0, -1, 1.5])
def test_bad_strides_raise(bad):
    with pytest.raises(ValueError, match="stride_between_seq"):
        clip_starts(10, 3, 1, bad)
