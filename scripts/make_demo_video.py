"""Regenerate the shipped demo assets ``framefusion/assets/demo.mp4`` and ``demo_qa.json``.

The clip is sample ``--index`` of the synthetic QA "demo" split (seeded, never trained on), and the
JSON holds its question and known answer, which ``framefusion demo`` asks the shipped model.

Usage: python scripts/make_demo_video.py [--index 0] [--kind turns_into] [--frames 16] [--repeat 1] [--size 112]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from framefusion.data.synthetic_qa import KINDS, write_demo  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=int, default=0, help="sample of the demo split")
    parser.add_argument("--kind", choices=KINDS, default="turns_into", help="question asked about it")
    parser.add_argument("--frames", type=int, default=16, help="distinct frames (as the shipped model was trained)")
    parser.add_argument("--repeat", type=int, default=1, help="times each frame is written")
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--out", type=Path, help="video path (default: framefusion/assets/demo.mp4)")
    args = parser.parse_args(argv)
    qa = write_demo(args.index, args.kind, args.frames, args.repeat, args.size, video_path=args.out)
    print(json.dumps(qa, indent=1))
    return qa


if __name__ == "__main__":
    main()
