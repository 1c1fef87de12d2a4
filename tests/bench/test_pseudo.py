import json

import pytest

from bench.pseudo import make_tuning_set


def test_a_tuning_set_holds_out_the_clips_named(tiny_data, tmp_path):
    make_tuning_set(tiny_data / "train", tmp_path / "set", holdout="02,03", seed=1)
    train = sorted(p.name for p in (tmp_path / "set" / "train").iterdir())
    labels = json.loads((tmp_path / "set" / "labels.json").read_text())
    held = sorted(p.name for p in (tiny_data / "train").iterdir() if p.stem in ("02", "03"))
    assert len(held) == 2 and not set(held) & set(train), "the named clips are not trained on"
    assert len(train) == 2 and {k.split("-")[0] for k in labels} == {"02", "03"}
    assert {k.split("-")[1] for k in labels} == {"normal", "fast", "object", "glide", "cart", "stray"}
    assert all(v["anomalous"] for k, v in labels.items() if not k.endswith("normal"))


@pytest.mark.parametrize("names", ["02,99", "01,02,03,04"])
def test_a_holdout_must_name_some_but_not_all_clips(tiny_data, tmp_path, names):
    with pytest.raises(ValueError, match="must name some, not all"):
        make_tuning_set(tiny_data / "train", tmp_path / "set", holdout=names)
