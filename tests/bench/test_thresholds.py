import json

from bench.thresholds import flag_rates


def test_flag_rates_count_normal_and_anomalous_frames_above_each_k(tmp_path):
    data, ev = tmp_path / "data", tmp_path / "eval"
    data.mkdir()
    (data / "labels.json").write_text(json.dumps({"01": {"frames": 4, "anomalous": [[3, 4]]}}))
    (ev / "01").mkdir(parents=True)
    rows = ["frame,time_s,score,anomalous", "1,0.0,1.0,0", "2,0.1,3.5,1", "3,0.2,2.5,1", "4,0.3,9.0,1"]
    (ev / "01" / "scores.csv").write_text("\n".join(rows) + "\n")
    assert flag_rates(data, ev, [2, 3, 10]) == [(2, 0.5, 1.0), (3, 0.5, 0.5), (10, 0.0, 0.0)]
