"""Regenerate the shipped demo asset ``framefusion/assets/demo.mp4`` (16 frames, 112x112, seeded).

Usage: python scripts/make_demo_video.py [--out PATH] [--frames 16] [--size 112] [--seed 0] [--fps 8]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from framefusion.models.tiny import demo_video_path, make_synthetic_video, read_video, write_video  # noqa: E402


def main(argv: list[str] | None = None) -> Path:
    """Write the demo video and check that it decodes back to the requested shape."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=demo_video_path())
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fps", type=int, default=8)
    args = parser.parse_args(argv)
    frames = make_synthetic_video(num_frames=args.frames, size=args.size, seed=args.seed)
    path = write_video(frames, args.out, fps=args.fps)
    decoded = read_video(path)
    assert decoded.shape == frames.shape, (decoded.shape, frames.shape)
    print(f"wrote {path} ({path.stat().st_size} bytes, {decoded.shape})")
    return path


if __name__ == "__main__":
    main()
