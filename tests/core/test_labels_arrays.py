import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cuboid_ad.core.arrays import runs
from cuboid_ad.core.errors import InputError
from cuboid_ad.core.labels import frame_labels, label_ranges, load_labels


@settings(max_examples=200, deadline=None)
@given(st.lists(st.booleans(), max_size=60))
def test_runs_are_the_maximal_stretches_of_true(flags):
    mask = np.array(flags, dtype=bool)
    found = runs(mask)
    rebuilt = np.zeros(len(mask), bool)
    for a, b in found:
        assert 0 <= a < b <= len(mask)
        assert mask[a:b].all() and (a == 0 or not mask[a - 1]) and (b == len(mask) or not mask[b])
        rebuilt[a:b] = True
    assert np.array_equal(rebuilt, mask)
    assert [a for a, _ in found] == sorted(a for a, _ in found)


def test_labels_round_trip_through_the_file(tmp_path):
    mask = np.zeros(50, bool)
    mask[0:3] = mask[10:20] = mask[49] = True
    ranges = label_ranges(mask)
    assert ranges == [[1, 3], [11, 20], [50, 50]]
    (tmp_path / "labels.json").write_text(json.dumps({"07": {"frames": 50, "anomalous": ranges}}))
    n, back = load_labels(tmp_path / "labels.json")["07"]
    assert n == 50 and np.array_equal(frame_labels(n, back), mask)


def test_a_range_outside_the_clip_is_refused(tmp_path):
    (tmp_path / "labels.json").write_text(json.dumps({"01": {"frames": 10, "anomalous": [[5, 11]]}}))
    with pytest.raises(InputError, match=r"\[5, 11\] is outside frames 1..10"):
        load_labels(tmp_path / "labels.json")
