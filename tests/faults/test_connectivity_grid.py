"""The connectivity head on a grid of one parcel has no pair to read: it trained and gave every
subject the same probability. Now refused before any data is read, and by the head itself."""
import pytest

from neuromamba.cli import parse_args
from neuromamba.models.connectivity import ConnectivityHead


def test_one_parcel_is_refused_by_the_flags_and_by_the_head():
    with pytest.raises(ValueError, match=r"--clf_head_version connectivity with --img_size 6 6 6 8 "
                                         r"--patch_size 6 6 6 2: .* gives 1 \(0 pairs: every subject "
                                         r"would get the same prediction\)"):
        parse_args(["--downstream_task", "sex", "--clf_head_version", "connectivity",
                    "--img_size", "6", "6", "6", "8"])
    with pytest.raises(ValueError, match=r"needs >= 2 parcels; token grid \(1, 1, 1, 4\) gives 1"):
        ConnectivityHead(16, 2, (1, 1, 1, 4))
    args = parse_args(["--downstream_task", "sex", "--clf_head_version", "connectivity",
                       "--img_size", "12", "12", "12", "8"])
    assert ConnectivityHead(16, 2, (2, 2, 2, 4)).pairs.shape[1] == 28  # 8 parcels: 28 pairs
    assert args.clf_head_version == "connectivity"
