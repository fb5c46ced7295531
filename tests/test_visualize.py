"""Token fates replayed from a report, every family's token geometry (its adapter's video_grids), and the
pictures (HTML, PNG, GIF)."""

import re

import numpy as np
import pytest
import torch
from PIL import Image

from framefusion import FrameFusionConfig
from framefusion.cli import main
from framefusion.tiny_models import zoo
from framefusion.report import Decision, ReductionReport
from framefusion.tools.visualize import (
    FrameGrid,
    TokenFate,
    TokenMap,
    UnsupportedFamilyError,
    build_token_map,
    frame_grid,
    qwen_frame_grid,
    render_html,
    token_fates,
    tokens_svg,
    write_gif,
    write_png,
)


def _report(n, decisions):
    return ReductionReport(
        method="framefusion",
        num_layers=4,
        requested_cost=0.5,
        vision_tokens=[n],
        vision_tokens_per_layer=[[n] * 4],
        achieved_cost=[0.5],
        reduction_seconds=0.0,
        decisions=[decisions],
    )


def _b(*bits):
    return torch.tensor([bool(x) for x in bits])


def test_token_fates_on_a_hand_built_example():
    # 8 tokens. Layer 1 merges 2 -> 0 and 4 -> 3; present then: originals [0, 1, 3, 5, 6, 7].
    # Layer 2 merges present #2 (original 3) into present #1 (original 1): 3's group, 4 included, joins 1.
    # Layer 3 prunes present #2 and #4 of [0, 1, 5, 6, 7]: originals 5 and 7.
    decisions = [
        Decision(1, "merge", _b(1, 1, 0, 1, 0, 1, 1, 1), torch.tensor([0, 1, 0, 3, 3, 5, 6, 7])),
        Decision(2, "merge", _b(1, 1, 0, 1, 1, 1), torch.tensor([0, 1, 1, 3, 4, 5])),
        Decision(3, "prune", _b(1, 1, 0, 1, 0)),
    ]
    assert token_fates(_report(8, decisions)) == [
        TokenFate("kept", None, 0),
        TokenFate("kept", None, 1),
        TokenFate("merged", 1, 0),
        TokenFate("merged", 2, 1),
        TokenFate("merged", 1, 1),  # followed through its root's later merge
        TokenFate("pruned", 3, 5),
        TokenFate("kept", None, 6),
        TokenFate("pruned", 3, 7),
    ]


def test_token_fates_without_decisions_keeps_everything():
    assert token_fates(_report(3, [])) == [TokenFate("kept", None, i) for i in range(3)]


@pytest.mark.parametrize(
    "decisions, sample, words",
    [
        ([Decision(0, "prune", _b(1, 0))], 0, ["layer 0", "2 tokens", "4 are present"]),
        ([Decision(0, "drop", _b(1, 1, 1, 0))], 0, ["'drop'", "merge", "prune"]),
        ([Decision(0, "merge", _b(1, 1, 1, 0))], 0, ["no root"]),
        ([], 1, ["sample", "[0, 1)", "1"]),
    ],
)
def test_token_fates_refuses_mismatched_reports(decisions, sample, words):
    with pytest.raises(ValueError) as err:
        token_fates(_report(4, decisions), sample)
    for w in words:
        assert w in str(err.value)


def test_qwen_frame_grid_geometry_non_square_and_odd_frames():
    video = np.random.default_rng(0).integers(0, 255, (5, 60, 90, 3), dtype=np.uint8)
    grid = qwen_frame_grid(video, (3, 4, 6))  # 3 temporal patches of 4x6 patches -> 2x3 tokens of 28 px
    assert (grid.rows, grid.cols, grid.block, grid.frames, grid.tokens) == (2, 3, 28, 3, 18)
    assert grid.images.shape == (3, 56, 84, 3)
    assert grid.labels == ["frames 0-1", "frames 2-3", "frame 4"]
    with pytest.raises(ValueError, match="merged patches"):
        qwen_frame_grid(video, (3, 5, 6))


def test_frame_grid_matches_the_processor_and_the_report(videos):
    model, processor = zoo.build("qwen2_vl", num_layers=4)
    video = videos[8][:, :100, :]  # 100 x 112: the processor resizes to a multiple of 28
    inputs = zoo.video_inputs(processor, ["What moves?"], [video])
    t, h, w = inputs["video_grid_thw"][0].tolist()
    tmap = build_token_map(model, processor, video, "What moves?", FrameFusionConfig(cost=0.3), inputs=None)
    assert tmap.grid.images.shape == (t, h * 14, w * 14, 3)
    assert tmap.video_tokens == t * (h // 2) * (w // 2)
    assert tmap.kept_tokens == tmap.tokens_per_layer[-1]
    per_frame = tmap.grid.rows * tmap.grid.cols
    for i, f in enumerate(tmap.fates):
        if f.fate == "merged":  # FrameFusion merges into the same patch of an earlier frame
            assert f.root // per_frame < i // per_frame and f.root % per_frame == i % per_frame


def test_fates_agree_with_the_kept_positions(videos):
    import framefusion

    model, processor = zoo.build("qwen2_vl", num_layers=4)
    inputs = zoo.video_inputs(processor, ["What moves?"], [videos[16]])
    config = FrameFusionConfig(cost=0.3, similarity_threshold=0.97)
    with framefusion.apply(model, config) as handle, torch.inference_mode():
        model(**inputs)
        report = handle.last_report()
    fates = token_fates(report)
    video_positions = (inputs["input_ids"][0] == model.config.video_token_id).nonzero().flatten().tolist()
    kept = set(report.kept_positions[0])
    assert [p in kept for p in video_positions] == [f.fate == "kept" for f in fates]
    assert {f.fate for f in fates} == {"kept", "merged", "pruned"}  # this setting does all three


def test_unsupported_family_is_named_in_the_error(videos, monkeypatch):
    # A model of no known family: the error names it and lists the families that are drawn.
    not_a_vlm = torch.nn.Linear(2, 2)
    with pytest.raises(UnsupportedFamilyError) as err:
        build_token_map(not_a_vlm, None, videos[8], "What moves?")
    msg = str(err.value)
    for w in ("Qwen2-VL", "Qwen2.5-VL", "not supported", "Linear", "InternVL", "LLaVA-OneVision", "SmolVLM2"):
        assert w in msg
    # A family framefusion reduces whose adapter gives no frame grid: named, with "not supported yet".
    import framefusion.adapters as adapters

    class NoGrids(adapters.LlavaOnevisionAdapter):
        video_grids = adapters.Adapter.video_grids

    monkeypatch.setattr(adapters, "ADAPTERS", [NoGrids if a is adapters.LlavaOnevisionAdapter else a for a in adapters.ADAPTERS])
    model, processor = zoo.build("llava_onevision", num_layers=1)
    with pytest.raises(UnsupportedFamilyError) as err:
        build_token_map(model, processor, videos[8], "What moves?")
    for w in ("not supported yet", "LLaVA-OneVision", "llava_onevision", "not patch grids", "Qwen2-VL"):
        assert w in str(err.value)
    with pytest.raises(ValueError, match="no video"):
        frame_grid(zoo.build("qwen2_vl", num_layers=1)[0], {}, videos[8])


def _expected_grid(family, model, inputs):
    """(frames, rows, cols, cell px, frame (H, W), non-grid placeholders per video) from the configs and
    the processor's output, by each family's documented formula (not the adapters' code)."""
    config, vision = model.config, model.config.vision_config
    if family in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "glm4v"):
        t, h, w = inputs["video_grid_thw"][0].tolist()
        p, m = vision.patch_size, vision.spatial_merge_size
        return t, h // m, w // m, p * m, (h * p, w * p), 0
    frames = 8  # every family below gets one picture per input frame of an 8-frame video
    if family == "internvl":
        side = int(config.image_seq_length**0.5)
        return frames, side, side, vision.image_size[0] / side, tuple(vision.image_size), 0
    g = vision.image_size // vision.patch_size
    side = {
        "llava_onevision": -(-g // 2),  # bilinear pooling to ceil(g/2)
        "llava_next_video": g // getattr(config, "spatial_pool_stride", 1),
        "video_llava": g,
        "smolvlm": g // getattr(config, "scale_factor", 1),
    }[family]
    extra = {"llava_onevision": 1, "video_llava": frames}.get(family, 0)  # newline; CLS per frame
    return frames, side, side, g * vision.patch_size / side, (vision.image_size, vision.image_size), extra


@pytest.mark.parametrize("family", list(zoo.TINY_FAMILIES))
def test_every_family_is_drawn(family, videos, tmp_path):
    from framefusion.adapters import adapter_for

    model, processor = zoo.build(family, num_layers=4)
    video = np.concatenate([videos[8], videos[8][:, :, :40]], axis=2)[:, :100]  # 100 x 152: not square
    inputs = zoo.video_inputs(processor, ["What moves?"], [video])
    adapter = adapter_for(model, processor)
    layouts = adapter.video_layouts(dict(inputs))
    (grid,) = adapter.video_grids(dict(inputs), layouts)[0]
    frames, rows, cols, cell, frame_size, extra = _expected_grid(family, model, inputs)
    assert (grid.frames, grid.rows, grid.cols, grid.frame_size) == (frames, rows, cols, frame_size)
    assert grid.cell == pytest.approx((cell, cell)) and grid.box(1, 2) == pytest.approx((2 * cell, cell, 3 * cell, 2 * cell))
    assert grid.tokens == len(layouts[0]) and torch.equal(grid.positions, layouts[0].positions)
    assert len(grid.others) == extra and not set(grid.others.tolist()) & set(grid.positions.tolist())

    tmap = build_token_map(model, processor, video, "What moves?", FrameFusionConfig(cost=0.3), inputs=inputs)
    assert tmap.video_tokens == grid.tokens == len(tmap.fates)  # token_fates covers every token
    assert tmap.grid.images.shape == (frames, *frame_size, 3)
    assert sum(tmap.counts().values()) == grid.tokens and tmap.kept_tokens == tmap.tokens_per_layer[-1]
    png = Image.open(write_png(tmap, tmp_path / "map.png"))
    assert np.asarray(png.convert("L")).std() > 20  # not blank
    assert Image.open(write_gif(tmap, tmp_path / "map.gif")).n_frames == frames
    page = render_html(tmap)
    assert len(re.findall(r"<i data-fate=", page)) == grid.tokens


@pytest.mark.parametrize("family", ["qwen2_vl", "llava_onevision", "video_llava", "internvl"])
def test_two_videos_in_one_prompt_get_two_grids(family, videos):
    from framefusion.adapters import adapter_for

    model, processor = zoo.build(family, num_layers=1)
    content = [{"type": "video", "video": videos[8]}, {"type": "video", "video": np.ascontiguousarray(videos[8][:, ::-1])}]
    inputs = processor.apply_chat_template(
        [[{"role": "user", "content": [*content, {"type": "text", "text": "Same?"}]}]],
        add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt",
    )  # fmt: skip
    adapter = adapter_for(model, processor)
    layouts = adapter.video_layouts(dict(inputs))
    grids = adapter.video_grids(dict(inputs), layouts)[0]
    assert len(grids) == 2 and grids[0].positions.max() < grids[1].positions.min()
    assert torch.equal(torch.cat([g.positions for g in grids]), layouts[0].positions)
    with pytest.raises(ValueError, match="one video at a time"):
        frame_grid(model, inputs, videos[8], processor)


def test_visualize_command_draws_a_non_qwen_family(tmp_path, capsys):
    import json

    rc = main(["visualize", "--model", "tiny:video_llava", "--out", str(tmp_path), "--frames", "8", "--no-answers",
               "--json"])  # fmt: skip
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert sorted(out["files"]) == ["gif", "html", "png"]
    assert sum(out["counts"][k] for k in ("kept", "merged", "pruned")) == 8 * 16  # 8 frames of 4 x 4 tokens (each CLS stays)
    assert np.asarray(Image.open(tmp_path / "token_map.png").convert("L")).std() > 20


def _toy_map(frames=3, rows=2, cols=3):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 255, (frames, rows * 28, cols * 28, 3), dtype=np.uint8)
    grid = FrameGrid(images, [f"frames {2 * k}-{2 * k + 1}" for k in range(frames)], rows, cols, 28)
    n = frames * rows * cols
    fates = [TokenFate("kept", None, i) for i in range(n)]
    per = rows * cols
    fates[per] = TokenFate("merged", 0, 0)  # frame 1, cell 0 -> frame 0, cell 0
    fates[2 * per] = TokenFate("merged", 0, 0)
    fates[per + 1] = TokenFate("pruned", 2, per + 1)
    fates[2 * per + 2] = TokenFate("merged", 0, 2)  # its root (frame 0 cell 2) is pruned later
    fates[2] = TokenFate("pruned", 3, 2)
    return TokenMap(grid, fates, [n - 3, n - 3, n - 4, n - 5], achieved_cost=0.8, requested_cost=0.9)


def test_drawn_classes_and_colours():
    tmap = _toy_map()
    per = 6
    assert tmap.cell(0)[:2] == ("root", 0)
    assert tmap.cell(per)[:2] == ("merged", 0) and tmap.cell(2 * per)[:2] == ("merged", 0)
    cls, group, text = tmap.cell(2 * per + 2)
    assert (cls, group) == ("pruned", 2) and "pruned at layer 3" in text
    assert tmap.drawn_counts() == {"kept": 13, "merged": 2, "pruned": 3, "pruned_after_merge": 1}
    assert tmap.kept_tokens == 13 and len(tmap.colors) == 2


def test_png_and_gif_show_the_frames(tmp_path):
    tmap = _toy_map()
    png = Image.open(write_png(tmap, tmp_path / "map.png"))
    assert png.width > 3 * 56 and png.height > 2 * 56
    assert np.asarray(png.convert("L")).std() > 20  # not blank
    gif = Image.open(write_gif(tmap, tmp_path / "map.gif"))
    assert gif.n_frames == 3 and gif.info.get("loop") == 0


def test_html_is_self_contained(tmp_path):
    tmap = _toy_map()
    page = render_html(tmap, results={"untouched": {"answer": "left", "t": 1}, "framefusion": {"answer": "", "t": 2}})
    assert page.startswith("<!doctype html>") and "<script>" in page and "<style>" in page
    assert not re.search(r"""(src|href)\s*=\s*["'](https?:)?//""", page)  # nothing fetched from a network
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", page) and "@import" not in page
    assert len(re.findall(r'src="data:image/png;base64,', page)) == 2 * 3
    assert len(re.findall(r"<i data-fate=", page)) == tmap.video_tokens
    assert 'id="answer-untouched">left<' in page and "(blank answer: &#x27;&#x27;)" in page
    assert page.count('class="ff-bar"') == 4


def test_tokens_svg_scales_bars():
    svg = tokens_svg([100, 50, 10], total=100)
    heights = [float(h) for h in re.findall(r'class="ff-bar"[^>]*height="([\d.]+)"', svg)]
    assert heights[0] > heights[1] > heights[2] > 0 and abs(heights[0] / heights[1] - 2) < 0.01


def test_visualize_command_writes_all_three(tmp_path, capsys):
    rc = main(["visualize", "--out", str(tmp_path), "--frames", "8", "--max-new-tokens", "2", "--json"])
    assert rc == 0
    import json

    out = json.loads(capsys.readouterr().out)
    assert sorted(out["files"]) == ["gif", "html", "png"]
    page = (tmp_path / "token_map.html").read_text()
    assert 'id="answer-untouched"' in page and 'id="answer-framefusion"' in page
    assert Image.open(tmp_path / "token_map.png").size[0] > 200


def test_visualize_command_errors(tmp_path, capsys):
    assert main(["visualize", "--out", str(tmp_path), "--formats", "svg"]) == 2
    assert "svg" in capsys.readouterr().err
    assert main(["visualize", "--out", str(tmp_path), "--video", str(tmp_path / "none.mp4")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("framefusion: error:") and "none.mp4" in err


def test_token_fates_of_a_fastvid_merge_with_dropped_tokens():
    """FastVID merges tokens into anchors and drops (root -1) those whose segment has no anchor."""
    import torch

    from framefusion.report import Decision, ReductionReport
    from framefusion.tools.visualize import MERGED, PRUNED, token_fates

    keep = torch.tensor([True, False, False, True, False])
    root = torch.tensor([0, 0, -1, 3, 3])
    report = ReductionReport("fastvid", 2, 0.4, [5], [[2, 2]], [0.4], 0.0, [[0, 3]], [[Decision(0, "merge", keep, root, 0.6)]])
    fates = token_fates(report)
    assert [f.fate for f in fates][1:3] == [MERGED, PRUNED] and fates[1].root == 0 and fates[4].root == 3
