"""The shipped trained model, the synthetic QA data and ``framefusion eval`` (accuracy vs budget)."""

import json
import types

import numpy as np
import pytest
import torch

from framefusion.cli import main
from framefusion.config import FastVConfig, FrameFusionConfig, RandomPruneConfig
from framefusion.data import synthetic_qa as qa
from framefusion.tools.answer import load_video_model
from framefusion.tools.evaluate import evaluate, first_word, synthetic_test_set
from framefusion.tools.loading import SHIPPED_MODEL, ModelOptions
from framefusion.integrations import lmms_eval as lm

# Untouched accuracy of the shipped model on the first 40 test questions: measured 0.975 (39/40;
# 0.998 on 500, FrameFusion at cost 0.3 the same). The bound leaves 3 answers of slack for other
# CPUs' rounding and still catches damaged or mismatched weights (the previous, weaker model scored
# 0.525; answering from the question alone scores about 0.22).
ACCURACY_BOUND = 0.9


@pytest.fixture(scope="module")
def shipped():
    loaded = load_video_model(SHIPPED_MODEL, ModelOptions(device="cpu"))
    return loaded.model, loaded.processor


@pytest.fixture(scope="module")
def test_items():
    return synthetic_test_set(40)


def test_shipped_model_and_processor_load_offline_with_from_pretrained():
    from transformers import AutoProcessor, Qwen2VLForConditionalGeneration

    model = Qwen2VLForConditionalGeneration.from_pretrained(SHIPPED_MODEL, local_files_only=True)
    processor = AutoProcessor.from_pretrained(SHIPPED_MODEL, local_files_only=True)
    assert type(processor).__name__ == "Qwen2VLProcessor"
    assert model.config.video_token_id == processor.tokenizer.convert_tokens_to_ids("<|video_pad|>")
    for answers in qa.ANSWERS.values():
        for word in answers:
            assert len(processor.tokenizer(word)["input_ids"]) == 1, word
    size = sum(f.stat().st_size for f in SHIPPED_MODEL.iterdir())
    assert size < 8 * 2**20  # a few MB in the repository


def test_shipped_model_answers_held_out_questions(shipped, test_items):
    model, processor = shipped
    rows = evaluate(model, processor, test_items, configs=[FrameFusionConfig(cost=0.3)], progress=False)
    assert rows[0]["label"] == "untouched" and rows[0]["total"] == 40
    assert rows[0]["accuracy"] >= ACCURACY_BOUND, rows[0]
    assert rows[1]["achieved_cost"] <= 0.3 and rows[1]["accuracy"] >= rows[0]["accuracy"] - 0.05, rows[1]


def test_eval_command_writes_the_table_json_and_plot(tmp_path, capsys):
    out = tmp_path / "eval"
    rc = main(["eval", "--count", "4", "--costs", "0.5", "--out", str(out), "--json"])
    assert rc == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["label"] for r in rows] == ["untouched", "framefusion", "fastv", "random"]
    for r in rows[1:]:
        assert r["cost"] == 0.5 and r["achieved_cost"] <= 0.5 and r["total"] == 4
        assert r["drop"] == pytest.approx(100 * (rows[0]["accuracy"] - r["accuracy"]))
    saved = json.loads((out / "eval.json").read_text())
    assert len(saved["rows"]) == 4 and len(saved["gold"]) == 4
    table = (out / "eval.md").read_text()
    assert "| method | budget (cost) | accuracy | change vs untouched (points) | achieved cost" in table
    for r in rows[1:]:  # a loss reads negative, as in the README
        change = 100 * (r["accuracy"] - rows[0]["accuracy"])
        assert f"({r['correct']}/{r['total']}) | {change:+.1f} |" in table
    assert (out / "eval.png").stat().st_size > 1000


def test_eval_on_a_json_qa_folder(tmp_path, shipped):
    from framefusion.tiny_models import write_video

    records = []
    for i in range(2):
        s = qa.make_sample("test", i, num_frames=8)
        write_video(s.video, tmp_path / f"clip{i}.mp4")
        records.append({"video": f"clip{i}.mp4", "question": s.question, "answer": s.answer.capitalize() + "."})
    (tmp_path / "qa.json").write_text(json.dumps(records))
    out = tmp_path / "out"
    assert main(["eval", "--qa", str(tmp_path), "--costs", "0.5", "--methods", "framefusion", "--out", str(out)]) == 0
    rows = json.loads((out / "eval.json").read_text())["rows"]
    assert [r["total"] for r in rows] == [2, 2]
    assert json.loads((out / "eval.json").read_text())["gold"] == [r["answer"].lower()[:-1] for r in records]


@pytest.mark.parametrize(
    "argv, words",
    [
        (["eval", "--costs", "0"], ["--costs", "(0, 1]"]),
        (["eval", "--count", "0"], ["--count", ">= 1"]),
        (["eval", "--model", "/no/such/model"], ["no model in", "/no/such/model"]),
        (["eval", "--qa", "/no/such/qa.json"], ["QA file not found", "/no/such/qa.json"]),
    ],
)
def test_eval_bad_input_exits_2(argv, words, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    for w in words:
        assert w in err


def test_bad_qa_json_is_refused_clearly(tmp_path):
    from framefusion.tools.evaluate import load_qa

    (tmp_path / "qa.json").write_text(json.dumps([{"video": "a.mp4", "question": "q"}]))
    with pytest.raises(ValueError, match="entry 0 must have string fields"):
        load_qa(tmp_path)


def test_first_word():
    assert first_word("  Left.<|im_end|>") == "left" and first_word("") == "" and first_word("blue shape") == "blue"


# ------------------------------------------------------------------------------------------- data


def test_samples_are_deterministic_and_splits_differ():
    a, b = qa.make_sample("train", 3, num_frames=8), qa.make_sample("train", 3, num_frames=8)
    assert np.array_equal(a.video, b.video) and a.question == b.question and a.answer == b.answer
    test = qa.make_sample("test", 3, num_frames=8)
    assert not np.array_equal(a.video, test.video)
    assert a.video.shape == (8, 112, 112, 3) and a.video.dtype == np.uint8


def test_every_kind_has_a_consistent_answer():
    for i in range(40):
        for kind in qa.KINDS:
            s = qa.make_sample("validation", i, num_frames=8, kind=kind)
            assert s.kind == kind and s.answer in qa.ANSWERS[kind]


def test_answers_match_the_pixels():
    # the moving shape's start colour is in frame 0, its new colour in the last frame, and its
    # centre moves the way the direction answer says; the still shape is on screen in a run of whole
    # frame pairs (all of them in about half the clips), always at the same place
    whole_clip = 0
    for i in range(20):
        d, still, new, start = (qa.make_sample("test", i, num_frames=8, kind=k) for k in qa.KINDS)
        assert np.array_equal(d.video, start.video) and np.array_equal(d.video, still.video)
        first, last = d.video[0], d.video[-1]

        def centre(frame, name):
            hits = np.argwhere((frame == np.array(qa.COLOURS[name], np.uint8)).all(-1))
            assert len(hits) > 50, name
            return hits.mean(0)

        dy, dx = centre(last, new.answer) - centre(first, start.answer)
        assert {"left": dx < -10, "right": dx > 10, "up": dy < -10, "down": dy > 10}[d.answer]
        colour = np.array(qa.COLOURS[still.answer], np.uint8)
        shown = np.flatnonzero((d.video == colour).all(-1).any((1, 2)))
        assert len(shown) >= 2 and shown[0] % 2 == 0 and len(shown) % 2 == 0
        assert np.array_equal(shown, np.arange(shown[0], shown[-1] + 1))
        assert np.allclose(centre(d.video[shown[0]], still.answer), centre(d.video[shown[-1]], still.answer))
        whole_clip += len(shown) == len(d.video)
        assert not (first == np.array(qa.COLOURS[new.answer], np.uint8)).all(-1).any()
    assert 3 <= whole_clip <= 17


def test_token_targets_match_the_pixels():
    # the vision tower's training targets, recomputed from the rendered frames: per 28x28 square of each
    # frame, the colour covering the most pixels if it covers at least 10% of the square
    names = list(qa.COLOURS)
    for i in range(6):
        sample, targets = qa.make_labelled_sample("train", i, num_frames=8)
        video = sample.video
        cells = video.shape[1] // 28
        share = np.stack([(video == np.array(qa.COLOURS[n], np.uint8)).all(-1) for n in names], -1)
        share = share.reshape(len(video), cells, 28, cells, 28, len(names)).mean((2, 4))  # (T, cells, cells, colours)
        expected = np.where(share.max(-1) >= 0.1, share.argmax(-1), -1)
        assert np.array_equal(targets["colour_a"], expected[0::2].reshape(-1))
        assert np.array_equal(targets["colour_b"], expected[1::2].reshape(-1))
        moving = targets["role"] == 1
        direction = qa.make_sample("train", i, num_frames=8, kind="direction").answer  # same clip
        assert moving.any() and set(targets["direction"][moving]) == {list(qa.DIRECTIONS).index(direction)}
        assert (targets["direction"][~moving] == -1).all()


def test_fast_patchify_equals_the_processor():
    processor = qa.build_qa_processor()
    samples = qa.make_split("train", 2, num_frames=8)
    real = qa.encode(processor, samples)
    fast = np.concatenate([qa.patchify(s.video, processor)[0] for s in samples])
    assert np.abs(real["pixel_values_videos"].numpy() - fast).max() < 1e-5


def test_bad_sample_arguments_are_refused():
    with pytest.raises(ValueError, match="unknown split"):
        qa.make_sample("dev", 0)
    with pytest.raises(ValueError, match="question kind"):
        qa.make_sample("test", 0, kind="count")
    with pytest.raises(ValueError, match="num_frames"):
        qa.make_sample("test", 0, num_frames=3)


# ------------------------------------------------------------------------------------------ lmms-eval


def test_lmms_eval_settings_from_model_args_and_environment(monkeypatch):
    rest, ours = lm.split_model_args("pretrained=Qwen/Qwen2.5-VL-7B-Instruct,framefusion_cost=0.5,max_num_frames=64")
    assert rest == "pretrained=Qwen/Qwen2.5-VL-7B-Instruct,max_num_frames=64"
    assert lm.config_from_settings(ours) == FrameFusionConfig(cost=0.5)
    assert lm.config_from_settings({}) is None
    assert lm.config_from_settings({"framefusion_method": "fastv", "framefusion_cost": "0.3"}) == FastVConfig(cost=0.3)
    assert lm.config_from_settings({"framefusion_method": "random"}) == RandomPruneConfig(cost=0.3)
    monkeypatch.setenv("FRAMEFUSION_COST", "0.7")
    assert lm.config_from_settings(lm._env_settings()) == FrameFusionConfig(cost=0.7)
    with pytest.raises(ValueError, match="framefusion_method must be one of"):
        lm.config_from_settings({"framefusion_method": "dycoke"})
    with pytest.raises(ValueError, match="framefusion_cost must be a number"):
        lm.config_from_settings({"framefusion_cost": "low"})
    with pytest.raises(ValueError, match="cost must be in"):
        lm.config_from_settings({"framefusion_cost": "2"})


def test_lmms_eval_patch_applies_to_the_wrapped_model(shipped, test_items):
    model, processor = shipped
    lmm = types.SimpleNamespace(model=model, processor=processor)  # what lmms-eval model objects expose
    handle = lm.patch_lmm(lmm, FrameFusionConfig(cost=0.5))
    try:
        inputs = processor(text=[qa.chat_text(processor, test_items[0].question)], videos=[test_items[0].video],
                           return_tensors="pt")  # fmt: skip
        with torch.no_grad():
            model.generate(**inputs, max_new_tokens=1)
        assert handle.last_report().achieved_cost[0] <= 0.5
    finally:
        handle.remove()


def test_lmms_eval_launcher_refuses_bad_settings_before_lmms_eval_runs(capsys):
    lm.check_settings(["--model", "qwen2_vl", "--model_args", "pretrained=x,framefusion_cost=0.5"])
    lm.check_settings(["--model", "qwen2_vl", "--model_args=pretrained=x"])
    with pytest.raises(ValueError, match="cost must be in"):
        lm.check_settings(["--model_args", "pretrained=x,framefusion_cost=2"])
    with pytest.raises(SystemExit) as exit_info:
        lm.main(["--model", "qwen2_vl", "--model_args=pretrained=x,framefusion_method=dycoke"])
    assert exit_info.value.code == 2
    assert "framefusion: error: framefusion_method must be one of" in capsys.readouterr().err


def test_lmms_eval_log_prints_each_prefill_once(shipped, test_items):
    import io

    model, processor = shipped
    stream = io.StringIO()
    handle = lm.patch_lmm(types.SimpleNamespace(model=model, processor=processor), FrameFusionConfig(cost=0.5))
    try:
        lm.log_reports(handle, stream)
        inputs = processor(text=[qa.chat_text(processor, test_items[0].question)], videos=[test_items[0].video],
                           return_tensors="pt")  # fmt: skip
        with torch.no_grad():
            model.generate(**inputs, max_new_tokens=3, min_new_tokens=3)
    finally:
        handle.remove()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("framefusion: prefill 1 sample 0:")
    assert f"achieved cost {handle.last_report().achieved_cost[0]:.3f}" in lines[0]
    with torch.no_grad():  # removed with the handle
        model(**inputs)
    assert len(stream.getvalue().splitlines()) == 1


def _log_likelihoods(model, processor, item, choices):
    """Multiple-choice scoring as lmms-eval's log-likelihood path does it: one forward per choice
    over prompt + choice with the prompt's labels at -100; (-loss, greedy-match) per choice, the
    greedy match read by slicing the logits from the prompt's end."""
    prompt = qa.chat_text(processor, item.question)
    scores = []
    for choice in choices:
        inputs = processor(text=[prompt + choice], videos=[item.video], return_tensors="pt")
        context = len(processor(text=[prompt], videos=[item.video], return_tensors="pt")["input_ids"][0])
        labels = inputs["input_ids"].clone()
        labels[:, :context] = -100
        with torch.no_grad():
            out = model(**inputs, labels=labels)
        greedy = out.logits.argmax(-1)[:, context - 1 : -1]
        scores.append((float(-out.loss), bool((greedy == inputs["input_ids"][:, context:]).all())))
    return scores


def test_multiple_choice_log_likelihood_scoring_works_with_framefusion(shipped, test_items):
    import framefusion

    model, processor = shipped
    items = test_items[:12]

    def answers():
        picked, scores = [], []
        for item in items:
            choices = qa.ANSWERS[item.kind]
            per_choice = _log_likelihoods(model, processor, item, choices)
            scores.append(per_choice)
            picked.append(choices[max(range(len(choices)), key=lambda i: per_choice[i][0])])
        return picked, scores

    untouched, untouched_scores = answers()
    with framefusion.apply(model, FrameFusionConfig(cost=1.0, similarity_threshold=1.5)):
        same, same_scores = answers()
    assert same_scores == untouched_scores  # bit for bit at no reduction
    with framefusion.apply(model, FrameFusionConfig(cost=0.3)) as handle:
        reduced, reduced_scores = answers()
        assert handle.last_report().achieved_cost[0] <= 0.3
    correct = [sum(a == item.answer for a, item in zip(run, items)) for run in (untouched, reduced)]
    assert correct[0] >= 10 and correct[1] >= correct[0] - 1, correct
    assert all(np.isfinite(s) for per_choice in reduced_scores for s, _ in per_choice)


def test_eval_shows_progress_batch_by_batch_on_stderr_and_none_with_json(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    argv = [sys.executable, "-m", "framefusion", "eval", "--count", "4", "--batch", "2", "--costs", "0.5",
            "--methods", "framefusion", "--out", str(tmp_path / "eval")]  # fmt: skip
    shown = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    assert shown.returncode == 0, shown.stderr
    # one bar counting answers (4 questions x 2 settings), batch by batch, naming the setting answering
    for shown_count in ("2/8", "4/8", "6/8", "8/8"):
        assert shown_count in shown.stderr, shown.stderr
    assert "untouched cost=-" in shown.stderr and "framefusion cost=0.5" in shown.stderr
    assert "| method |" in shown.stdout and "2/8 [" not in shown.stdout
    quiet = subprocess.run([*argv, "--json"], capture_output=True, text=True, env=env, timeout=600)
    assert quiet.returncode == 0 and "2/8" not in quiet.stderr
    assert [r["label"] for r in json.loads(quiet.stdout)] == ["untouched", "framefusion"]
