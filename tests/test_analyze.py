"""framefusion analyze: statistics against a direct computation, the threshold rule, outputs, errors."""

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from framefusion.adapters import adapter_for
from framefusion.tools.analyze import (
    _same_patch_earlier,
    analyze,
    kendall_tau_b,
    spearman,
    suggest_threshold,
)
from framefusion.cli import main
from framefusion.tiny_models import zoo

LAYER = 2  # the layer checked by brute force


# ------------------------------------------------------------------ brute-force references
def brute_ranks(x):
    x = np.asarray(x, dtype=float)
    less = (x[None, :] < x[:, None]).sum(1)
    equal = (x[None, :] == x[:, None]).sum(1)
    return 1 + less + (equal - 1) / 2


def brute_spearman(x, y):
    rx, ry = brute_ranks(x), brute_ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def brute_kendall(x, y):
    n = len(x)
    c = d = tx = ty = 0
    for i in range(n):
        for j in range(i + 1, n):
            sx, sy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
            tx += sx == 0
            ty += sy == 0
            if sx * sy > 0:
                c += 1
            elif sx * sy < 0:
                d += 1
    n0 = n * (n - 1) // 2
    den = math.sqrt((n0 - tx) * (n0 - ty))
    return float("nan") if den == 0 else (c - d) / den


def same_or_both_nan(a, b, tol=1e-9):
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= tol


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def qwen(videos):
    model, processor = zoo.build("qwen2_vl")
    return model, processor


@pytest.fixture(scope="module")
def analysed(qwen, videos, tmp_path_factory):
    model, processor = qwen
    out = tmp_path_factory.mktemp("analyze")
    result = analyze(model, processor, videos[16], distances=(1, 2, 4), random_pairs=3000, out_dir=out, progress=False)
    return result, out


def layer_input(model, processor, inputs, layer):
    captured = {}

    def hook(module, args, kwargs):
        captured["h"] = (args[0] if args else kwargs["hidden_states"]).detach().clone()

    h = adapter_for(model, processor).decoder_layers()[layer].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            model(**inputs)
    finally:
        h.remove()
    return captured["h"][0].double()


# ------------------------------------------------------------------ statistics
def test_statistics_match_a_direct_computation(qwen, videos, analysed):
    model, processor = qwen
    result, _ = analysed
    inputs = zoo.video_inputs(processor, ["Describe what happens in this video."], [videos[16]])
    layout = adapter_for(model, processor).video_layouts(dict(inputs))[0]
    hidden = layer_input(model, processor, inputs, LAYER)[layout.positions]
    n = len(layout)
    assert result.video_tokens == n and result.frames == int(layout.frame.max()) + 1
    where = {(int(p), int(f)): i for i, (p, f) in enumerate(zip(layout.patch, layout.frame))}
    edges = np.array(result.bin_edges)
    for d in (1, 2, 4):
        pairs = [
            (i, where[(int(p), int(f) - d)])
            for i, (p, f) in enumerate(zip(layout.patch, layout.frame))
            if (int(p), int(f) - d) in where
        ]
        cos = np.array([float(torch.nn.functional.cosine_similarity(hidden[i], hidden[j], dim=0)) for i, j in pairs])
        s = result.stats[f"d={d}"][LAYER]
        if not pairs:
            assert s.count == 0 and s.mean is None
            continue
        assert s.count == len(pairs)
        assert s.mean == pytest.approx(cos.mean(), abs=1e-5)
        np.testing.assert_allclose(s.quantiles, np.quantile(cos, result.quantile_levels), atol=1e-5)
        ref_hist = np.histogram(cos, bins=edges)[0]
        assert sum(s.histogram) == len(pairs) and np.abs(np.array(s.histogram) - ref_hist).sum() <= 2
        if d == 1:
            np.testing.assert_allclose(result.adjacent_similarity[LAYER], cos, atol=1e-5)
            assert result.adjacent_positions.tolist() == [int(layout.positions[i]) for i, _ in pairs]
            share = [float((cos >= t).sum()) / n for t in result.thresholds]
            np.testing.assert_allclose(result.share_above[LAYER], share, atol=1.5 / n)
    # random pairs: a seeded sample of distinct video tokens; its mean estimates the mean over all pairs
    unit = hidden / hidden.norm(dim=-1, keepdim=True)
    gram = (unit @ unit.T).numpy()
    every = gram[~np.eye(n, dtype=bool)]
    s = result.stats["random"][LAYER]
    assert s.count == result.random_pairs == 3000
    assert abs(s.mean - every.mean()) < 4 * every.std() / math.sqrt(s.count) + 1e-6
    assert every.min() - 1e-5 <= s.quantiles[0] and s.quantiles[-1] <= every.max() + 1e-5


def test_rank_correlations_between_layers_match_brute_force(analysed):
    result, _ = analysed
    adj = result.adjacent_similarity
    assert len(adj) == result.num_layers
    for i in range(result.num_layers):
        for j in range(result.num_layers):
            if i == j:
                continue
            assert same_or_both_nan(result.spearman[i][j], brute_spearman(adj[i], adj[j]), 1e-9)
            assert same_or_both_nan(result.kendall[i][j], brute_kendall(adj[i], adj[j]), 1e-9)
            assert result.spearman[i][j] == result.spearman[j][i]


def test_same_patch_earlier_matches_a_loop():
    rng = np.random.default_rng(0)
    frames, patches = 6, 5
    frame = torch.arange(frames).repeat_interleave(patches)
    patch = torch.arange(patches).repeat(frames) + 100 * torch.tensor(rng.integers(0, 2, frames * patches))
    for d in (1, 2, 5, 6):
        got = _same_patch_earlier(frame, patch, d).tolist()
        want = []
        for i in range(len(frame)):
            match = [j for j in range(len(frame)) if patch[j] == patch[i] and frame[j] == frame[i] - d]
            want.append(match[0] if match else -1)
        assert got == want


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(-3, 3)), min_size=0, max_size=40))
def test_spearman_and_kendall_against_their_definitions(pairs):
    x = np.array([p[0] for p in pairs], dtype=float)
    y = np.array([p[1] for p in pairs], dtype=float)
    if len(x) < 2:
        assert math.isnan(spearman(x, y)) and math.isnan(kendall_tau_b(x, y))
        return
    assert same_or_both_nan(spearman(x, y), brute_spearman(x, y), 1e-9)
    assert same_or_both_nan(kendall_tau_b(x, y), brute_kendall(x, y), 1e-9)


def test_rank_correlation_extremes():
    x = np.arange(1000, dtype=float)
    assert spearman(x, x) == pytest.approx(1) and kendall_tau_b(x, x) == pytest.approx(1)
    assert spearman(x, -x) == pytest.approx(-1) and kendall_tau_b(x, -x) == pytest.approx(-1)
    assert math.isnan(kendall_tau_b(x, np.ones_like(x))) and math.isnan(spearman(x, np.ones_like(x)))


# ------------------------------------------------------------------ the suggested threshold
def test_suggested_threshold_rule():
    sims = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    assert suggest_threshold(sims, 8, 0.3) == (0.7, 3 / 8, None)  # ceil(0.3 * 8) = 3rd largest
    assert suggest_threshold(sims, 8, 0.25) == (0.8, 2 / 8, None)  # exactly 2 tokens
    thr, share, _ = suggest_threshold(np.array([0.73456, 0.1]), 4, 0.25)
    assert thr == 0.7345 and share == 0.25  # rounded down: still marks the token
    thr, share, _ = suggest_threshold(np.array([0.9, 0.8, 0.8, 0.8]), 5, 0.4)
    assert thr == 0.8 and share == 4 / 5  # ties: at least the target share
    thr, share, note = suggest_threshold(sims, 8, 0.9)
    assert thr == 0.5 and share == 5 / 8 and "unreachable" in note
    for bad in (0, 1, 1.5, float("nan"), -0.1):
        with pytest.raises(ValueError, match="target_share"):
            suggest_threshold(sims, 8, bad)


def test_suggested_threshold_on_the_model(analysed):
    result, _ = analysed
    sims = result.adjacent_similarity[result.first_layer]
    k = math.ceil(result.target_share * result.video_tokens)
    assert (sims >= result.suggested_threshold).sum() >= k
    assert (sims >= result.suggested_threshold + 1e-4).sum() < k  # the largest such threshold (4 decimals)
    assert result.suggested_share == (sims >= result.suggested_threshold).sum() / result.video_tokens
    assert result.paper_threshold_share == (sims >= 0.6).sum() / result.video_tokens


# ------------------------------------------------------------------ outputs
def test_plots_and_json_are_written(analysed):
    result, out = analysed
    names = ["adjacent_similarity.png", "layer_distribution.png", "ranking_consistency.png", "analysis.json"]
    for name in names:
        assert (out / name).stat().st_size > 0
    for name in names[:3]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (out / "analysis.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    data = json.loads(text)
    assert data["suggested_threshold"] == result.suggested_threshold
    assert set(data["stats"]) == {"d=1", "d=2", "d=4", "random"}
    assert len(data["stats"]["d=1"]) == data["num_layers"] == 4
    assert len(data["spearman"]) == 4 and len(data["share_above"][0]) == len(data["thresholds"])
    assert "adjacent_similarity" not in data
    assert sorted(result.files) == ["adjacent_similarity", "json", "layer_distribution", "ranking_consistency"]


@pytest.mark.parametrize("family", ["qwen2_vl", "llava_onevision", "internvl"])
def test_every_family(family, videos):
    model, processor = zoo.build(family)
    result = analyze(model, processor, videos[8], random_pairs=500, progress=False)
    layers = adapter_for(model, processor).decoder_layers()
    assert result.num_layers == len(layers) and result.frames >= 2
    for name, per_layer in result.stats.items():
        assert len(per_layer) == len(layers)
        if name in ("d=1", "random"):
            assert all(s.count > 0 for s in per_layer)
    # observation 1 on a video with a still background: the previous frame is closer than a random token
    assert result.median("d=1")[0] > result.median("random")[0]
    assert 0 < result.suggested_share <= 1 and result.files == {}


def test_a_prompt_without_video_is_a_clear_error(qwen):
    model, processor = qwen
    inputs = zoo.video_inputs(processor, ["What is this?"], [None])
    with pytest.raises(ValueError, match="no video in the prompt"):
        analyze(model, processor, inputs, progress=False)
    with pytest.raises(ValueError, match="no video in the prompt"):
        analyze(model, processor, None, progress=False)


def test_bad_settings_name_the_value(qwen, videos):
    model, processor = qwen
    with pytest.raises(ValueError, match="1 frame"):
        analyze(model, processor, videos[2], progress=False)  # one Qwen temporal patch
    for kwargs, words in [
        ({"distances": (0,)}, "distances"),
        ({"thresholds": (1.5,)}, "thresholds"),
        ({"target_share": 1.0}, "target_share"),
        ({"random_pairs": -1}, "random_pairs"),
    ]:
        with pytest.raises(ValueError, match=words):
            analyze(model, processor, videos[8], progress=False, **kwargs)


# ------------------------------------------------------------------ the command line
def test_cli_json_on_a_tiny_model(tmp_path, capsys):
    rc = main(["analyze", "--model", "tiny:qwen2_vl", "--frames", "4", "--random-pairs", "200",
               "--out", str(tmp_path), "--json", "--target-share", "0.25"])  # fmt: skip
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    assert data["target_share"] == 0.25 and data["video_tokens"] > 0
    assert (tmp_path / "analysis.json").is_file() and (tmp_path / "layer_distribution.png").is_file()


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--model", "tiny:qwen2_vl", "--target-share", "1.5"], ["target_share", "1.5"]),
        (["--model", "tiny:nope"], ["unknown tiny family", "nope", "qwen2_vl"]),
        (["--model", "tiny:qwen2_vl", "--video", "/no/such/video.mp4"], ["not found", "/no/such/video.mp4"]),
        (["--model", "tiny:qwen2_vl", "--frames", "1"], ["--frames", "2"]),
        (["--model", "/no/such/model"], ["model not found", "/no/such/model", "tiny:FAMILY"]),
        (["--model", "tiny:qwen2_vl", "--thresholds", "2"], ["thresholds", "[-1, 1]"]),
    ],
)
def test_cli_bad_arguments_exit_2(argv, words, tmp_path, capsys):
    assert main(["analyze", *argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("framefusion: error:")
    for w in words:
        assert w in err


def test_cli_needs_a_model():
    with pytest.raises(SystemExit) as exc:
        main(["analyze"])
    assert exc.value.code == 2
