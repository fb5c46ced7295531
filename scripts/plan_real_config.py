"""Equal-compute plans for a real architecture without its weights (issue 17): Qwen2-VL-7B by default.

The vision tower's FLOPs per temporal patch are counted by torch's flop counter on the shipped config's
tower built with 1 and with 2 blocks (random weights, one temporal patch at the frame size): the blocks
are identical, so depth d costs ``f(1) + (d - 1) (f(2) - f(1))``, exactly. The LLM side is
``framefusion.flops.layer_flops`` on the real text config. Prints the FLOP-priced cost at which m x F
frames cost no more than F untouched, counting the vision tower (total) and not (llm).

    python scripts/plan_real_config.py --config qwen2-vl-7b --size 448 --frames 16 --text 60
"""

from __future__ import annotations

import argparse
import json

import torch
from torch.utils.flop_counter import FlopCounterMode

from framefusion.planning import PromptCompute, plan_cost
from framefusion.tools.bench import load_config


def tower_flops(name: str, depth: int, size: int) -> float:
    """FLOPs of the vision tower (with its merger) of ``name`` at ``depth`` blocks over one temporal patch."""
    from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VisionTransformerPretrainedModel

    config = load_config(name, vision_depth=depth).vision_config
    torch.manual_seed(0)
    tower = Qwen2VisionTransformerPretrainedModel._from_config(config).eval()
    side = size // config.patch_size
    grid = torch.tensor([[1, side, side]])
    pixels = torch.randn(side * side, config.in_channels * config.temporal_patch_size * config.patch_size**2)
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        tower(pixels, grid_thw=grid)
    return float(counter.get_total_flops())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="qwen2-vl-7b")
    p.add_argument("--size", type=int, default=448, help="frame side in pixels")
    p.add_argument("--frames", type=int, default=16, help="F: the frames affordable untouched")
    p.add_argument("--text", type=int, default=60, help="text tokens of the prompt")
    p.add_argument("--multiples", type=int, nargs="+", default=[2, 3, 4])
    args = p.parse_args()
    torch.set_num_threads(1)
    config = load_config(args.config)
    one, two = tower_flops(args.config, 1, args.size), tower_flops(args.config, 2, args.size)
    per_patch = one + (config.vision_config.depth - 1) * (two - one)  # one temporal patch = 2 frames
    tokens_per_frame = (args.size // 28) ** 2 / config.vision_config.temporal_patch_size

    def prompt(frames: int) -> PromptCompute:
        return PromptCompute(frames, args.text, int(frames * tokens_per_frame), per_patch * frames / 2)

    text = config.text_config
    out = dict(config=args.config, size=args.size, frames=args.frames, text_tokens=args.text,
               vision_flops_per_frame=per_patch / 2, plans=[])  # fmt: skip
    for m in args.multiples:
        for scope in ("total", "llm"):
            try:
                plan = plan_cost(text, prompt(m * args.frames), prompt(args.frames), scope=scope)
                row = dict(multiple=m, scope=scope, cost=round(plan.cost, 4),
                           unreduced_vs_target=round(plan.untouched_flops() / plan.target_flops, 3))  # fmt: skip
            except ValueError as err:
                row = dict(multiple=m, scope=scope, cost=None, why=str(err))
            out["plans"].append(row)
            print(row)
    llm_per_frame = plan_cost(text, prompt(args.frames), prompt(args.frames), scope="llm").target_flops / args.frames
    out["vision_share_of_untouched"] = round(per_patch / 2 / (per_patch / 2 + llm_per_frame), 3)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
