"""A tuning set made from a dataset's *training* split only.

Settings are chosen on this set, never on the test split. The training clips
are split in two: the first ones train the models, the last ones are turned
into pseudo-test clips with labelled, synthetic anomalies of the two kinds a
fixed walkway camera sees most:

- ``fast``: a stretch of the clip played at 3x speed (every third frame), so
  everything in view moves three times faster than normal (bikes, skaters);
- ``object``: a textured box, larger than a person, pasted onto the clip and
  moving across it at several pixels per frame (carts, vehicles);
- ``glide``: a person cut out of the clip itself (background subtraction
  against the clip's median frame) and pasted gliding across the scene at its
  own height, several times walking speed, alongside the normal crowd
  (a cyclist or skater among pedestrians);
- ``cart``: the ``object`` box at walking speed (1-2 pixels per frame), an
  anomaly of appearance rather than speed (a cart pushed or a wheelchair);
- ``stray``: a cut-out person at walking speed along the band of rows where the
  training clips move least, an anomaly of place (someone on the grass, in a closed area).

The untouched held-out clips are included too, as all-normal clips.

Which clips are held out: the last ones, or (``--holdout busiest``) the ones
with the most motion, so that the pseudo-test scenes are more crowded than the
training scenes, as a new recording's often are, or the ones named
(``--holdout 05,06,07,08``), for a set unlike those already built.

    python -m bench.pseudo --train DATA/train --out work/tuning [--holdout busiest|NAMES] [--seed N]
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from cuboid_ad.core.config import ExtractConfig
from cuboid_ad.core.labels import label_ranges
from cuboid_ad.pipeline.media.decode import list_clips, open_clip, read_frames
from cuboid_ad.pipeline.media.synthetic import write_video


def _decode(path: Path) -> tuple[np.ndarray, float]:
    src = open_clip(path, ExtractConfig(frame_height=open_clip(path, ExtractConfig()).height))
    cfg = ExtractConfig(frame_height=src.height, frame_width=src.width)
    return np.concatenate(list(read_frames(src, cfg)))[..., 0], src.fps


def fast_forward(frames: np.ndarray, first: int, length: int, speed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Frames with ``length`` frames from ``first`` on played at ``speed``x; labels of the new clip."""
    fast = frames[first : first + speed * length : speed]
    rest = frames[first + speed * len(fast) :]
    out = np.concatenate([frames[:first], fast, rest])
    labels = np.zeros(len(out), bool)
    labels[first : first + len(fast)] = True
    return out, labels


def paste_object(
    frames: np.ndarray, rng: np.random.Generator, first: int, speeds: tuple[float, float] = (3, 6)
) -> tuple[np.ndarray, np.ndarray]:
    """A textured box moving horizontally across the lower two thirds of the frame, ``speeds`` pixels per frame."""
    n, H, W = frames.shape
    h, w = int(0.16 * H), int(0.14 * W)
    texture = frames[rng.integers(n), : h, rng.integers(0, W - w) :][:, :w].astype(np.float32)
    box = np.clip(0.6 * texture + 0.4 * rng.integers(30, 220), 0, 255)
    box[:2], box[-2:], box[:, :2], box[:, -2:] = 20, 20, 20, 20
    y = int(rng.integers(int(0.35 * H), H - h))
    speed = float(rng.uniform(*speeds)) * (1 if rng.random() < 0.5 else -1)
    out = frames.copy()
    labels = np.zeros(n, bool)
    for t, x, a, b in _sweep(n, W, w, first, speed):
        out[t, y : y + h, a:b] = box[:, a - x : b - x].astype(np.uint8)
        labels[t] = True
    return out, labels


def _sweep(n: int, W: int, w: int, first: int, speed: float):
    """(t, x, a, b) for an object ``w`` wide crossing a ``W``-wide frame from frame ``first``:
    its left edge x and visible columns a..b, until it has left the frame."""
    x0 = -w if speed > 0 else W
    for t in range(first, n):
        x = int(round(x0 + speed * (t - first)))
        a, b = max(0, x), min(W, x + w)
        if a >= b:
            if t > first + 2:
                return
            continue
        yield t, x, a, b


def cut_person(frames: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
    """A moving person's pixels, mask and top row, found by background subtraction."""
    from scipy import ndimage

    background = np.median(frames, axis=0)
    for _ in range(200):
        t = int(rng.integers(len(frames)))
        fg = ndimage.binary_opening(np.abs(frames[t].astype(np.float32) - background) > 25, iterations=1)
        fg = ndimage.binary_closing(fg, iterations=2)
        blobs, n = ndimage.label(fg)
        for sl in ndimage.find_objects(blobs):
            h, w = sl[0].stop - sl[0].start, sl[1].stop - sl[1].start
            if 14 <= h <= 60 and 5 <= w <= h and 0.4 <= fg[sl].mean():
                label = blobs[sl][h // 2, w // 2] or np.bincount(blobs[sl].ravel())[1:].argmax() + 1
                return frames[t][sl].copy(), ndimage.binary_dilation(blobs[sl] == label, iterations=1), sl[0].start
    raise ValueError("no person-sized moving blob found")


def paste_glider(
    frames: np.ndarray, rng: np.random.Generator, first: int, speeds: tuple[float, float] = (4, 7), row_motion: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """A cut-out person sliding horizontally at ``speeds`` pixels per frame (4-7: 3-5x walking speed),
    at its own height, or, given ``row_motion`` (see :func:`row_motion`), along the band of rows
    below the top quarter of the frame (where the ground usually is) that moves least."""
    n, H, W = frames.shape
    pixels, mask, y = cut_person(frames, rng)
    h, w = mask.shape
    if row_motion is not None:
        band = np.convolve(row_motion, np.ones(h), mode="valid")
        y = H // 4 + int(np.argmin(band[H // 4 :]))
    speed = float(rng.uniform(*speeds)) * (1 if rng.random() < 0.5 else -1)
    out = frames.copy()
    labels = np.zeros(n, bool)
    for t, x, a, b in _sweep(n, W, w, first, speed):
        m = mask[:, a - x : b - x]
        region = out[t, y : y + h, a:b]
        region[m] = pixels[:, a - x : b - x][m]
        labels[t] = True
    return out, labels


def row_motion(clips: list[Path], level: int = 20) -> np.ndarray:
    """Per row of the frame, the share of its pixels whose frame difference exceeds ``level``, over ``clips``."""
    shares = []
    for c in clips:
        frames, _ = _decode(c)
        shares.append((np.abs(np.diff(frames.astype(np.int16), axis=0)) > level).mean(axis=(0, 2)))
    return np.mean(shares, axis=0)


def motion_share(path: Path, level: int = 20) -> float:
    """Share of pixels whose absolute frame difference exceeds ``level``: how busy a clip is."""
    frames, _ = _decode(path)
    return float((np.abs(np.diff(frames.astype(np.int16), axis=0)) > level).mean())


def make_tuning_set(train_path: Path, out_path: Path, n_holdout: int = 4, seed: int = 0, holdout: str = "last") -> Path:
    """``out_path/train`` (links to the clips kept for training), ``out_path/test`` and ``labels.json``.
    ``holdout``: "last", "busiest" (``n_holdout`` clips), or clip names (file stems) separated by commas."""
    clips = list_clips(train_path)
    if holdout in ("last", "busiest") and len(clips) <= n_holdout:
        raise ValueError(f"{train_path}: needs more than {n_holdout} clips")
    if holdout == "busiest":
        busy = {c: motion_share(c) for c in clips}
        held = sorted(sorted(clips, key=busy.get)[-n_holdout:])
        print("motion share per clip: " + ", ".join(f"{c.stem} {busy[c]:.4f}" for c in clips))
    elif holdout == "last":
        held = clips[-n_holdout:]
    else:
        names = holdout.split(",")
        held = [c for c in clips if c.stem in names]
        if len(held) != len(set(names)) or len(held) == len(clips):
            raise ValueError(f"{train_path}: --holdout {holdout} must name some, not all, of its clips")
    keep = [c for c in clips if c not in held]
    print("held out: " + ", ".join(c.stem for c in held))
    (out_path / "train").mkdir(parents=True, exist_ok=True)
    for c in keep:
        link = out_path / "train" / c.name
        if not link.exists():
            os.symlink(c.resolve(), link)
    rng = np.random.default_rng(seed)
    cart_rng = np.random.default_rng([seed, 1])  # its own streams: the other kinds stay as they were before these
    stray_rng = np.random.default_rng([seed, 2])
    quiet_rows = row_motion(keep)  # where the training clips never move
    labels = {}
    for c in held:
        frames, fps = _decode(c)
        n = len(frames)
        variants = {
            "normal": (frames, np.zeros(n, bool)),
            "fast": fast_forward(frames, n // 4, n // 8),
            "object": paste_object(frames, rng, int(rng.integers(n // 6, n // 3))),
            "glide": paste_glider(frames, rng, int(rng.integers(n // 6, n // 3))),
            "cart": paste_object(frames, cart_rng, int(cart_rng.integers(n // 6, n // 3)), speeds=(1, 2)),
            "stray": paste_glider(frames, stray_rng, int(stray_rng.integers(n // 6, n // 3)), speeds=(1, 2), row_motion=quiet_rows),
        }
        for kind, (f, y) in variants.items():
            cid = f"{c.stem}-{kind}"
            write_video(f, out_path / "test" / f"{cid}.mkv", fps)
            labels[cid] = {"frames": int(len(f)), "anomalous": label_ranges(y)}
    (out_path / "labels.json").write_text(json.dumps(labels, indent=1))
    return out_path


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=Path, required=True, help="a dataset's train/ folder")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--holdout", default="last", help='"last", "busiest", or clip names separated by commas')
    ap.add_argument("--n-holdout", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    make_tuning_set(args.train, args.out, args.n_holdout, args.seed, args.holdout)


if __name__ == "__main__":
    main()
