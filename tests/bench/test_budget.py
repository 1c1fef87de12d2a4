import torch

from bench.budget import INPUT_FRAMES, FramePredictor, main


def test_the_frame_predictor_maps_four_frames_to_one_at_the_input_size():
    model = FramePredictor().eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3 * INPUT_FRAMES, 32, 32))
    assert out.shape == (2, 3, 32, 32)
    assert sum(p.numel() for p in model.parameters()) > 7_000_000  # 64-128-256-512 levels: the published size


def test_budget_prints_the_step_time_and_the_schedule_it_implies(capsys):
    threads = torch.get_num_threads()
    try:
        main(["--size", "16", "--batch", "1", "--steps", "1", "--threads", "1"])
    finally:
        torch.set_num_threads(threads)  # the rest of the suite keeps its threads
    out = capsys.readouterr().out
    assert "one training step: median" in out
    assert "one Ped2 epoch (2486 steps)" in out
    assert "60 epochs:" in out
