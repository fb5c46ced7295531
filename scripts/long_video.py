"""A ten-minute clip at 1 fps (600 frames) through the shipped synthetic-v2 model on the CPU, measured.

    .venv/bin/python scripts/long_video.py                      # 600 frames, chunks of 16, docs/long_video/
    .venv/bin/python scripts/long_video.py --frames 120 --out /tmp/lv

Runs :func:`framefusion.tools.long_video.measure_long_video`: the vision stage alone in one pass and in
chunks (:func:`framefusion.chunked_vision`), then ``generate`` untouched in one pass, untouched with
chunking and with FrameFusion + chunking, and prints / writes (long_video.json, README.md) the vision
tokens, peak live tensor memory of the vision stage and of the whole generate, peak resident memory of
the process, the KV cache after prefill and the wall times.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

MIB = 2**20


def table(r: dict) -> str:
    v = r["vision"]
    lines = [
        f"{r['frames']} frames of {r['frame_size'][0]}x{r['frame_size'][1]} (1 fps: {r['frames'] / 60:.0f} min), "
        f"video grid (t, h, w) = {tuple(r['video_grid_thw'])}, {r['video_tokens']} video tokens in a "
        f"{r['prompt_tokens']}-token prompt; pixels {r['pixel_bytes'] / MIB:.0f} MiB (the decoded frames "
        f"{r['frames_bytes'] / MIB:.0f} MiB); {r['threads']} thread(s)",
        "",
        "| vision stage (get_video_features) | peak live tensors | time |",
        "|---|---|---|",
        f"| one pass | {v['peak_one_pass'] / MIB:.1f} MiB | {v['seconds_one_pass']:.2f} s |",
        f"| chunks of {r['chunk_frames']} frames ({v['chunks']} calls) | {v['peak_chunked'] / MIB:.1f} MiB "
        f"(bound {v['bound_chunked'] / MIB:.1f} MiB = one chunk alone {v['peak_one_chunk_alone'] / MIB:.1f} "
        f"+ 2 x output {v['output_bytes'] / MIB:.1f}) | {v['seconds_chunked']:.2f} s |",
        "",
        f"Features equal (torch.equal): {v['equal']}. Peak one pass / chunked: "
        f"{v['peak_one_pass'] / v['peak_chunked']:.1f}x.",
        "",
        "| generate | answer | vision tokens (per layer) | peak live tensors | RSS before -> peak of the call | KV "
        "cache after prefill | time |",
        "|---|---|---|---|---|---|---|",
    ]
    for g in r["generate"]:
        per_layer = g["vision_tokens_per_layer"]
        tokens = f"{per_layer[0]} x {len(per_layer)} layers (cost {g['achieved_cost']:.2f})" if per_layer else (
            f"{r['video_tokens']} (all)")  # fmt: skip
        kv = g["kv_cache"]
        kv_text = f"{g['kv_cache_bytes'] / MIB:.1f} MiB ({kv[0]['tokens']} tokens a layer)" if kv else "-"
        lines.append(
            f"| {g['setting']} | {g['answer']!r} | {tokens} | {g['peak_tensor_bytes'] / MIB:.1f} MiB | "
            f"{(g['rss_before_bytes'] or 0) / MIB:.0f} -> {g['peak_rss_bytes'] / MIB:.0f} MiB | {kv_text} | {g['seconds']:.2f} s |"
        )
    lines += ["", f"Question: {r['question']} (truth: {r['truth']}; the model was trained on 32-frame clips, so "
              f"its answer about {r['frames']} frames is not a measure of anything). Highest RSS of the process: "
              f"{r['process_peak_rss_bytes'] / MIB:.0f} MiB.", "", *observations(r)]  # fmt: skip
    return "\n".join(lines)


def observations(r: dict) -> list[str]:
    """What the numbers say, written from them."""
    v, gens = r["vision"], {g["setting"].split(",")[0] + ("" if "one pass" in g["setting"] else " chunked"): g
                            for g in r["generate"]}  # fmt: skip
    out = [f"- The vision stage in chunks of {r['chunk_frames']} frames peaks at {v['peak_chunked'] / MIB:.1f} MiB "
           f"against {v['peak_one_pass'] / MIB:.1f} MiB in one pass ({v['peak_one_pass'] / v['peak_chunked']:.1f}x "
           f"less), within its bound; what remains is mostly the output itself ({v['output_bytes'] / MIB:.1f} MiB: "
           "the pooled features and the tower's last hidden states), which grows with the clip."]  # fmt: skip
    one, chunked = gens.get("untouched"), gens.get("untouched chunked")
    if one and chunked:
        if chunked["peak_tensor_bytes"] >= 0.95 * one["peak_tensor_bytes"]:
            out.append(
                f"- The whole generate peaks at {one['peak_tensor_bytes'] / MIB:.1f} MiB of live tensors with or "
                f"without chunking: on this model the language model's prefill over {r['prompt_tokens']} tokens "
                "(its KV cache filling layer by layer, the MLP activations) is the larger stage, not the 2-block "
                "vision tower. The call's peak resident memory: "
                f"{one['peak_rss_bytes'] / MIB:.0f} MiB in one pass, {chunked['peak_rss_bytes'] / MIB:.0f} MiB chunked."
            )  # fmt: skip
        else:
            out.append(f"- The whole generate peaks at {chunked['peak_tensor_bytes'] / MIB:.1f} MiB of live tensors "
                       f"with chunking against {one['peak_tensor_bytes'] / MIB:.1f} MiB without.")  # fmt: skip
    reduced = next((g for g in r["generate"] if g["vision_tokens_per_layer"]), None)
    if reduced and one:
        per_token = {layer["bytes"] / layer["tokens"] for g in (reduced, one) for layer in g["kv_cache"]}
        same = ", the same bytes per token" if len(per_token) == 1 else ""
        out.append(
            f"- FrameFusion keeps {reduced['vision_tokens_per_layer'][-1]} of {r['video_tokens']} video tokens, and "
            f"the KV cache after prefill holds {reduced['kv_cache_bytes'] / MIB:.1f} MiB against "
            f"{one['kv_cache_bytes'] / MIB:.1f} MiB ({reduced['kv_cache'][0]['tokens']} against "
            f"{one['kv_cache'][0]['tokens']} tokens a layer{same}); the generate's peak falls to "
            f"{reduced['peak_tensor_bytes'] / MIB:.1f} MiB and its time to {reduced['seconds']:.2f} s from "
            f"{one['seconds']:.2f} s.")  # fmt: skip
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=600, help="frames of the clip (1 fps: 600 = ten minutes)")
    parser.add_argument("--chunk", type=int, default=16, help="frames per vision-tower call (a multiple of 2)")
    parser.add_argument("--cost", type=float, default=0.3, help="FrameFusion's budget")
    parser.add_argument("--new-tokens", type=int, default=4, help="tokens generate produces")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--out", default="docs/long_video", help="folder for long_video.json and README.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from framefusion.tools.long_video import highest_rss_bytes, measure_long_video

    r = measure_long_video(frames=args.frames, chunk=args.chunk, cost=args.cost, new_tokens=args.new_tokens)
    r["process_peak_rss_bytes"] = highest_rss_bytes()
    r["environment"] = dict(torch=torch.__version__, python=platform.python_version(), machine=platform.machine(),
                            command=" ".join(["scripts/long_video.py", *(argv if argv is not None else sys.argv[1:])]))  # fmt: skip
    text = table(r)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "long_video.json").write_text(json.dumps(r, indent=1) + "\n")
    (out / "README.md").write_text(
        "# A ten-minute clip through the shipped model, vision tower chunked\n\n"
        f"`.venv/bin/python {r['environment']['command']}` (CPU, the shipped synthetic-v2 Qwen2-VL; "
        "`framefusion.tools.long_video`). Peak live tensors: bytes of the tensors made during the call and alive "
        "at once (`framefusion.tools.memory.LiveTensorMemory`; the inputs, weights and kernels' scratch are not "
        "in it). RSS: the process's resident memory (VmRSS) before the call and its peak (VmHWM, reset before the "
        "call) during it; both include the libraries, the model and the inputs. KV cache: keys and values of all layers after a prefill.\n\n"
        + text
        + "\n"
    )
    print(f"wrote {out / 'long_video.json'} and {out / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
