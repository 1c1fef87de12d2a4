import torch

from bench import budget
from bench.budget import INPUT_FRAMES, FramePredictor, main


def test_the_frame_predictor_maps_four_frames_to_one_at_the_input_size():
    model = FramePredictor().eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3 * INPUT_FRAMES, 32, 32))
    assert out.shape == (2, 3, 32, 32)
    assert sum(p.numel() for p in model.parameters()) > 7_000_000  # 64-128-256-512 levels: the published size


def test_step_seconds_times_each_step_after_a_warm_up():
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        times = budget.step_seconds(16, 1, 3)
    finally:
        torch.set_num_threads(threads)  # the rest of the suite keeps its threads
    assert len(times) == 3 and all(t > 0 for t in times)


def test_budget_derives_the_schedule_from_the_median_step(capsys, monkeypatch):
    """Known step times in, so every printed figure can be checked: median 0.6 s (the mean would be 0.67, the
    max 0.9); 2486 samples at batch 2 = 1243 steps = 745.8 s an epoch; 60 epochs = 12.4 h = 24.9 budgets."""
    monkeypatch.setattr(budget, "step_seconds", lambda size, batch, steps: [0.5, 0.9, 0.6])
    threads = torch.get_num_threads()
    try:
        main(["--size", "16", "--batch", "2", "--steps", "3", "--threads", "1"])
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out.splitlines()
    assert out[1] == "one training step: median 0.60 s over 3 (min 0.50, max 0.90)"
    assert out[2] == "one Ped2 epoch (1243 steps): 12 min"
    assert out[3] == "60 epochs: 12.4 h, 25 times the 30-minute training budget"
