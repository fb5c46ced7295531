"""The conformance suite every model family passes (tiny random-weight models, real processors).

Adding a family = an adapter file, a tiny builder in framefusion/tiny_models/zoo.py, and its name below.
"""

import pytest
import torch
from conftest import greedy, probe_and_eager_attention, replay_logits

import framefusion
from framefusion import FrameFusionConfig, Replay
from framefusion.adapters import adapter_for
from framefusion.tools.bench import output_cache
from framefusion.tiny_models.zoo import build, video_inputs

FAMILIES = [
    "qwen2_vl",
    "qwen2_5_vl",
    "qwen3_vl",
    "glm4v",
    "internvl",
    "llava_onevision",
    "llava_next_video",
    "video_llava",
    "smolvlm",
]

NOOP = FrameFusionConfig(cost=1.0, similarity_threshold=1.5, ratio_threshold=0.1)
_CACHE: dict = {}


def tiny(family, attn="sdpa", num_layers=4):
    key = (family, attn, num_layers)
    if key not in _CACHE:
        _CACHE[key] = build(family, num_layers=num_layers, attn_implementation=attn)
    return _CACHE[key]


@pytest.fixture(params=FAMILIES)
def family(request):
    return request.param


def _video_token_positions(model, processor, inputs, b=0):
    """Positions of the video tokens that are frame content, from the family's adapter (tokens
    that share the video placeholder but are no patch, like LLaVA-OneVision's newline or
    Video-LLaVA's CLS tokens, stay text). Each family's own test checks its layout independently."""
    return adapter_for(model, processor).video_layouts(dict(inputs))[b].positions.tolist()


def test_noop_is_bitwise_identical_and_remove_restores(family, videos):
    model, processor = tiny(family)
    inputs = video_inputs(processor, ["What moves in the video?"], [videos[16]])
    with torch.no_grad():
        logits = model(**inputs).logits
    tokens, step_logits = greedy(model, inputs, n=5)
    with framefusion.apply(model, NOOP, processor=processor) as handle:
        with torch.no_grad():
            assert torch.equal(model(**inputs).logits, logits)
        t2, l2 = greedy(model, inputs, n=5)
        report = handle.last_report()
    n = len(_video_token_positions(model, processor, inputs))
    assert report.vision_tokens == [n] and report.vision_tokens_per_layer == [[n] * report.num_layers]
    assert torch.equal(t2, tokens) and torch.equal(l2, step_logits)
    t3, l3 = greedy(model, inputs, n=5)
    assert torch.equal(t3, tokens) and torch.equal(l3, step_logits)
    assert all(not m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize("cost", [0.1, 0.3, 0.7, 1.0])
@pytest.mark.parametrize("threshold", [0.5, 0.95, 1.5])
def test_budget_never_exceeded(family, videos, cost, threshold):
    model, processor = tiny(family, num_layers=6)
    inputs = video_inputs(processor, ["Which shape is fastest?", "Count."], [videos[16], videos[8]])
    layers = model.config.get_text_config().num_hidden_layers
    floor = adapter_for(model, processor).first_reducible_layer({}) / layers
    if cost < floor:  # layers that must see every token make smaller budgets impossible: refused
        with pytest.raises(ValueError, match=f"cost={cost} is below"):
            framefusion.apply(model, FrameFusionConfig(cost=cost), processor=processor)
        return
    with framefusion.apply(
        model, FrameFusionConfig(cost=cost, similarity_threshold=threshold), processor=processor
    ) as handle:
        with torch.no_grad():
            model(**inputs)
        report = handle.last_report()
    assert report.num_layers == layers
    for b, (n, counts, achieved) in enumerate(
        zip(report.vision_tokens, report.vision_tokens_per_layer, report.achieved_cost)
    ):
        assert n == len(_video_token_positions(model, processor, inputs, b))
        assert achieved == pytest.approx(sum(counts) / (layers * n))
        assert achieved <= cost + 1e-12
        assert all(a >= b for a, b in zip(counts, counts[1:]))
        if threshold > 1:  # pruning alone fills the budget to whole tokens
            assert cost - achieved < 1 / n + 1e-12


def test_text_untouched_and_positions_preserved(family, videos):
    model, processor = tiny(family)
    inputs = video_inputs(processor, ["Where does the red shape go?"], [videos[16]])
    last = adapter_for(model, processor).decoder_layers()[-1]
    seen = {}

    def capture(module, args, kwargs):
        seen["cos"], seen["sin"] = (t.clone() for t in kwargs["position_embeddings"])

    hook = last.register_forward_pre_hook(capture, with_kwargs=True)
    try:
        with torch.no_grad():
            model(**inputs)
            full_cos, full_sin = seen["cos"], seen["sin"]
            with framefusion.apply(model, FrameFusionConfig(cost=0.3), processor=processor) as handle:
                hook.remove()  # re-register after framefusion's own hook so it sees what the layer gets
                hook = last.register_forward_pre_hook(capture, with_kwargs=True)
                model(**inputs)
                report = handle.last_report()
    finally:
        hook.remove()
    kept = report.kept_positions[0]
    video = set(_video_token_positions(model, processor, inputs))
    assert set(range(inputs["input_ids"].shape[1])) - video <= set(kept)  # all text kept
    assert len(set(kept) & video) == report.vision_tokens_per_layer[0][-1]
    torch.testing.assert_close(seen["cos"][0], full_cos[0, kept], rtol=0, atol=0)
    torch.testing.assert_close(seen["sin"][0], full_sin[0, kept], rtol=0, atol=0)


@pytest.mark.parametrize("cost", [0.3, 0.5])
def test_exact_decoding_matches_cache_free_replay(family, videos, cost):
    model, processor = tiny(family)
    inputs = video_inputs(processor, ["Which object moves first?"], [videos[16]])
    with framefusion.apply(
        model, FrameFusionConfig(cost=cost, similarity_threshold=0.9), processor=processor
    ) as handle:
        tokens, step_logits = greedy(model, inputs, n=4)
        report = handle.last_report()
    assert report.vision_tokens_per_layer[0][-1] < report.vision_tokens[0]
    replayed = replay_logits(model, inputs, tokens, report.decisions, processor, counts=report.vision_tokens_per_layer)
    torch.testing.assert_close(replayed, step_logits, atol=2e-5, rtol=1e-5)


GRID_FAMILIES = ["qwen2_vl", "qwen2_5_vl", "qwen3_vl", "glm4v"]


@pytest.mark.parametrize("family", GRID_FAMILIES)
def test_generate_passes_no_grid_to_the_forward(family, videos):
    """generate() runs the vision tower before the first forward and passes video_grid_thw=None to
    it: the adapters of the grid-based families keep the grids from get_video_features."""
    model, processor = tiny(family)
    inputs = video_inputs(processor, ["What moves?"], [videos[8]])
    seen = []
    hook = model.model.register_forward_pre_hook(
        lambda m, a, k: seen.append(k.get("video_grid_thw")) if not seen else None, with_kwargs=True
    )
    try:
        with framefusion.apply(model, FrameFusionConfig(cost=0.3)) as handle:
            greedy(model, inputs, n=2)
            report = handle.last_report()
    finally:
        hook.remove()
    assert seen == [None]
    assert report.vision_tokens_per_layer[0][-1] < report.vision_tokens[0]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_left_padded_batch_equals_single_samples(family, videos, attn):
    model, processor = tiny(family, attn=attn)
    questions = ["Which way does the red shape move, left or right?", "Colour?", "And this one?"]
    clips = [videos[8], videos[16], None]
    with framefusion.apply(model, FrameFusionConfig(cost=0.3, similarity_threshold=0.8), processor=processor) as handle:
        batch = video_inputs(processor, questions, clips)
        assert (batch["attention_mask"] == 0).any(), "the batch must be padded"
        tokens, logits = greedy(model, batch, n=4)
        report = handle.last_report()
        for b in range(len(questions)):
            single = video_inputs(processor, [questions[b]], [clips[b]])
            t1, l1 = greedy(model, single, n=4)
            alone = handle.last_report()
            assert alone.vision_tokens_per_layer[0] == report.vision_tokens_per_layer[b]
            assert alone.achieved_cost[0] == report.achieved_cost[b]
            assert torch.equal(tokens[b : b + 1], t1)
            torch.testing.assert_close(logits[b : b + 1], l1, atol=1e-4, rtol=1e-4)
    padded = (batch["attention_mask"] == 0).any(1).nonzero().flatten().tolist()
    assert padded  # padding is never kept as a token (equal-length videos may leave row 0 unpadded)
    for b in padded:
        pad = (batch["attention_mask"][b] == 0).nonzero().flatten().tolist()
        assert not set(pad) & set(report.kept_positions[b])


def test_prompt_without_video_is_untouched(family):
    model, processor = tiny(family)
    inputs = video_inputs(processor, ["Just text, no video."], [None])
    base = greedy(model, inputs, n=4)
    with framefusion.apply(model, FrameFusionConfig(cost=0.3), processor=processor) as handle:
        got = greedy(model, inputs, n=4)
        assert handle.last_report().vision_tokens == [0]
        assert handle.last_report().achieved_cost == [1.0]
    assert torch.equal(got[0], base[0]) and torch.equal(got[1], base[1])


def test_hand_written_decode_loop_continues_original_positions(family, videos):
    """Without generate (position_ids=None at decode), new tokens still get the untouched numbering."""
    model, processor = tiny(family)
    inputs = video_inputs(processor, ["Count the shapes."], [videos[16]])
    with framefusion.apply(model, FrameFusionConfig(cost=0.3), processor=processor):
        tokens, step_logits = greedy(model, inputs, n=4)
        with torch.no_grad():
            out = model(**inputs, use_cache=True)
            cache, nxt = output_cache(out), out.logits[:, -1:].argmax(-1)
            mine = [nxt]
            for _ in range(3):
                out = model(input_ids=nxt, past_key_values=cache, use_cache=True)
                nxt = out.logits[:, -1:].argmax(-1)
                mine.append(nxt)
    assert torch.equal(torch.cat(mine, dim=1), tokens)
    torch.testing.assert_close(out.logits[:, -1], step_logits[:, -1], atol=2e-5, rtol=1e-5)


def test_attention_probe_equals_the_layers_own_attention(family, videos):
    """The importance scores use exactly the attention each layer computes (eager weights)."""
    model, processor = tiny(family, attn="eager")
    inputs = video_inputs(processor, ["What moves?"], [videos[8]])
    for _, probs, eager in probe_and_eager_attention(model, adapter_for(model, processor), inputs):
        torch.testing.assert_close(probs, eager, atol=1e-6, rtol=1e-5)


# ------------------------------------------------------------- every generate / forward mode
MERGE_ONLY = FrameFusionConfig(cost=0.3, prune=False)  # decisions depend on the video alone
REDUCE = FrameFusionConfig(cost=0.3, similarity_threshold=0.9)


def _per_token(inputs):
    """The (b, L) tensors of ``inputs``: what a later call over the same sequence passes again."""
    length = inputs["input_ids"].shape[1]
    return {k: v for k, v in inputs.items() if isinstance(v, torch.Tensor) and v.shape[:2] == (1, length)}


def _extend(inputs, new_ids):
    """``inputs`` followed by ``new_ids`` (1, n): ids appended, per-token tensors padded (mask 1, else 0)."""
    out = dict(inputs)
    length = inputs["input_ids"].shape[1]
    for key, value in _per_token(inputs).items():
        fill = new_ids if key == "input_ids" else torch.full_like(new_ids, int(key == "attention_mask"))
        out[key] = torch.cat([value, fill.to(value.dtype)], dim=1)
    assert out["input_ids"].shape[1] == length + new_ids.shape[1]
    return out


def _generate(model, inputs, n=3, **kwargs):
    with torch.no_grad():
        out = model.generate(
            **inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False, output_logits=True,
            return_dict_in_generate=True, **kwargs,
        )
    return out, output_cache(out)


def _no_media_tokens(model, processor) -> dict:
    """generate() kwargs that keep a random model from sampling a video/image placeholder, which a
    cache-free forward over the sequence would then take for media (transformers refuses that)."""
    tokenizer = getattr(processor, "tokenizer", processor)
    ids = set(tokenizer.all_special_ids)
    for name in ("image_token_id", "video_token_id", "image_token_index", "video_token_index"):
        value = getattr(model.config, name, None)
        if isinstance(value, int):
            ids.add(value)
    return {"suppress_tokens": sorted(ids)}


def _or_skip_if_transformers_fails(run):
    """run(); GLM-4V's own generate (transformers 5.23/5.24) fails to expand a video batch for
    beams / several return sequences, untouched: nothing for framefusion to match there."""
    try:
        return run()
    except ValueError as error:
        pytest.skip(f"the untouched model fails: {error}")


def test_beams_and_sampled_sequences_at_no_reduction_equal_untouched(family, videos):
    model, processor = tiny(family)
    inputs = video_inputs(processor, ["What moves?"], [videos[8]])

    def run():
        with torch.no_grad():
            beams = model.generate(**inputs, max_new_tokens=3, num_beams=2, num_return_sequences=2, do_sample=False)
            torch.manual_seed(0)
            sampled = model.generate(**inputs, max_new_tokens=3, do_sample=True, num_return_sequences=2)
        return beams, sampled

    untouched = _or_skip_if_transformers_fails(run)
    with framefusion.apply(model, NOOP, processor=processor) as handle:
        got = run()
        assert handle.last_report().vision_tokens == [len(_video_token_positions(model, processor, inputs))] * 2
    assert torch.equal(got[0], untouched[0]) and torch.equal(got[1], untouched[1])


def test_reduced_beams_equal_the_cache_free_path(family, videos):
    """Beam search reorders the shortened cache; the cache-free path (use_cache=False: every step a
    whole-sequence forward with the first step's decisions replayed) never reorders anything."""
    model, processor = tiny(family)
    inputs = video_inputs(processor, ["What moves?"], [videos[8]])
    with torch.no_grad():
        _or_skip_if_transformers_fails(lambda: model.generate(**inputs, max_new_tokens=1, num_beams=2))
    with framefusion.apply(model, REDUCE, processor=processor) as handle, torch.no_grad():
        beams = dict(max_new_tokens=4, num_beams=3, num_return_sequences=2, do_sample=False)
        beams.update(_no_media_tokens(model, processor))
        cached = model.generate(**inputs, **beams)
        report = handle.last_report()
        free = model.generate(**inputs, **beams, use_cache=False)
    assert len(report.vision_tokens) == 3 and report.vision_tokens_per_layer[0][-1] < report.vision_tokens[0]
    assert torch.equal(cached, free)


def test_reduced_sampling_with_two_sequences_equals_its_replay(family, videos):
    model, processor = tiny(family)
    inputs = video_inputs(processor, ["What moves?"], [videos[8]])
    with torch.no_grad():
        _or_skip_if_transformers_fails(lambda: model.generate(**inputs, max_new_tokens=1, num_beams=2))
    with framefusion.apply(model, REDUCE, processor=processor) as handle, torch.no_grad():
        torch.manual_seed(0)
        out = model.generate(
            **inputs, max_new_tokens=3, min_new_tokens=3, do_sample=True, num_return_sequences=2,
            output_logits=True, return_dict_in_generate=True, **_no_media_tokens(model, processor),
        )
        report = handle.last_report()
    assert len(report.decisions) == 2 and report.vision_tokens_per_layer[0][-1] < report.vision_tokens[0]
    prompt = inputs["input_ids"].shape[1]
    step_logits = torch.stack(out.logits, dim=1)  # (2, 3, vocab)
    for row in range(2):  # each sequence against a cache-free replay of its own row's decisions
        tokens = out.sequences[row : row + 1, prompt:]
        replayed = replay_logits(model, inputs, tokens, [report.decisions[row]], processor)
        torch.testing.assert_close(replayed, step_logits[row : row + 1], atol=2e-5, rtol=1e-5)


def test_use_cache_false_gives_the_tokens_of_use_cache_true(family, videos):
    model, processor = tiny(family)
    inputs = video_inputs(processor, ["Which object moves first?"], [videos[16]])
    with framefusion.apply(model, REDUCE, processor=processor) as handle:
        cached, _ = _generate(model, inputs, n=4)
        counts = handle.last_report().vision_tokens_per_layer
        free, _ = _generate(model, inputs, n=4, use_cache=False)
        assert handle.last_report().vision_tokens_per_layer == counts  # the last step replayed the first
    assert counts[0][-1] < handle.last_report().vision_tokens[0]
    assert torch.equal(cached.sequences, free.sequences)
    torch.testing.assert_close(torch.stack(free.logits), torch.stack(cached.logits), atol=2e-5, rtol=1e-5)


def test_multi_turn_chat_with_a_reused_cache(family, videos):
    """Turn after turn, each passing the previous turn's cache back with only the conversation's
    ids: equal to a fresh generate over the whole conversation (decisions that depend on the video
    alone), and to a cache-free forward over it with the first turn's decisions replayed."""
    model, processor = tiny(family)
    tokenizer = getattr(processor, "tokenizer", processor)
    inputs = video_inputs(processor, ["What moves?"], [videos[16]])
    with framefusion.apply(model, MERGE_ONLY, processor=processor) as handle:
        out, cache = _generate(model, inputs)
        decisions = handle.last_report().decisions
        assert handle.last_report().vision_tokens_per_layer[0][-1] < handle.last_report().vision_tokens[0]
        conversation = inputs
        for text in ["And then, what colour is it?", "Is anything else on screen?"]:
            # the untouched length: every token so far but the last generated one (not fed yet)
            assert cache.get_seq_length() == out.sequences.shape[1] - 1
            answer = out.sequences[:, conversation["input_ids"].shape[1] :]
            conversation = _extend(conversation, torch.cat([answer, tokenizer(text, return_tensors="pt")["input_ids"]], 1))
            out, cache = _generate(model, _per_token(conversation), past_key_values=cache)
            fresh, _ = _generate(model, conversation)
            assert torch.equal(out.sequences, fresh.sequences)
            torch.testing.assert_close(torch.stack(out.logits), torch.stack(fresh.logits), atol=2e-5, rtol=1e-5)
    with framefusion.apply(model, Replay(decisions), processor=processor), torch.no_grad():
        replayed = model(**conversation, use_cache=False).logits[:, -1]
    torch.testing.assert_close(replayed, out.logits[0], atol=2e-5, rtol=1e-5)


def test_forward_keeps_the_input_length_and_scores_with_labels(family, videos):
    model, processor = tiny(family)
    inputs = video_inputs(processor, ["What moves?"], [videos[16]])
    length = inputs["input_ids"].shape[1]
    labels = inputs["input_ids"].clone()
    labels[:, : length - 4] = -100  # score the last tokens only, as multiple-choice scoring does
    with torch.no_grad():
        untouched = model(**inputs, labels=labels)
    with framefusion.apply(model, NOOP, processor=processor), torch.no_grad():
        same = model(**inputs, labels=labels)
    assert torch.equal(same.logits, untouched.logits) and torch.equal(same.loss, untouched.loss)
    with framefusion.apply(model, REDUCE, processor=processor) as handle, torch.no_grad():
        reduced = model(**inputs, labels=labels)
        kept = handle.last_report().kept_positions[0]
        last_only = model(**inputs, logits_to_keep=1).logits
    assert reduced.logits.shape == untouched.logits.shape
    removed = sorted(set(range(length)) - set(kept))
    assert removed and removed == torch.isnan(reduced.logits[0]).all(-1).nonzero().flatten().tolist()
    assert torch.isfinite(reduced.logits[0, kept]).all()
    torch.testing.assert_close(reduced.logits[:, -1:], last_only, atol=1e-5, rtol=1e-5)
    # the loss: mean cross-entropy of each label scored by a kept row (the previous position)
    rows = [t - 1 for t in range(1, length) if labels[0, t] != -100 and t - 1 in kept]
    expected = torch.nn.functional.cross_entropy(reduced.logits[0, rows].float(), labels[0, [r + 1 for r in rows]])
    torch.testing.assert_close(reduced.loss, expected)
