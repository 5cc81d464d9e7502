import pytest

from neuromamba.data.windows import clip_frame_indices, clip_slice, clip_span, clip_starts


# stride_between_seq is in clip lengths (sequence_length x stride_within_seq frames), as in the
# original: 1 tiles the run without overlap.
@pytest.mark.parametrize("n, length, within, between, starts", [
    (10, 3, 1, 1, [0, 3, 6]),                  # non-overlapping
    (10, 3, 1, 1 / 3, [0, 1, 2, 3, 4, 5, 6, 7]),  # every window
    (10, 3, 1, 0.5, [0, 2, 4, 6]),             # step round(1.5) = 2
    (10, 3, 1, 2, [0, 6]),                     # skip a clip's worth of frames
    (12, 3, 2, 1, [0, 6]),                     # span 5, step 6: frames 0 2 4 | 6 8 10
    (10, 3, 2, 0.5, [0, 3]),                   # span 5, step 3; a start at 6 would end at 10 > 9
    (4, 5, 1, 1, []),                          # run shorter than a clip: no clip, never a short one
    (20, 20, 1, 1, [0]),
    (5, 2, 1, 0.01, [0, 1, 2, 3]),             # a step rounds to at least one frame
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


@pytest.mark.parametrize("bad", [0, -1, -0.5, "1"])
def test_bad_strides_raise(bad):
    with pytest.raises(ValueError, match="stride_between_seq"):
        clip_starts(10, 3, 1, bad)
