"""``framefusion eval``'s bootstrap intervals and its data-parallel path (shards, merge, accelerate launch)."""

import contextlib
import json
import math
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

import framefusion
from framefusion.cli import main
from framefusion.config import FrameFusionConfig, RandomPruneConfig
from framefusion.tools import evaluate as ev

COUNT, BATCH = 24, 4  # 6 batches: shard 0 of 2 answers batches 0, 2, 4, shard 1 batches 1, 3, 5


# ------------------------------------------------------------------------------------------ intervals


def _plain_percentile_bootstrap(correct, resamples, seed, level=0.95):
    """The same method written out in plain Python, one resample at a time, as a check of the vectorised one."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(correct), size=(resamples, len(correct)))
    means = sorted(sum(correct[j] for j in row) / len(correct) for row in draws)

    def percentile(q):  # numpy's default (linear) definition
        pos = q / 100 * (len(means) - 1)
        lo = math.floor(pos)
        return means[lo] + (means[min(lo + 1, len(means) - 1)] - means[lo]) * (pos - lo)

    tail = 100 * (1 - level) / 2
    return percentile(tail), percentile(100 - tail)


def test_bootstrap_interval_matches_a_plain_computation_and_the_normal_approximation():
    correct = [True] * 160 + [False] * 40  # accuracy 0.8 on 200 questions
    random.Random(1).shuffle(correct)
    lo, hi = ev.bootstrap_interval(correct, resamples=2000, seed=0)
    plain = _plain_percentile_bootstrap(correct, 2000, 0)
    assert (lo, hi) == pytest.approx(plain, abs=1e-12)
    # independent of the resampling: the normal approximation p +- 1.96 sqrt(p (1 - p) / n) = 0.8 +- 0.0554
    half = 1.96 * math.sqrt(0.8 * 0.2 / 200)
    assert lo == pytest.approx(0.8 - half, abs=0.012) and hi == pytest.approx(0.8 + half, abs=0.012)
    assert lo < 0.8 < hi
    assert ev.bootstrap_interval(correct, 2000, 0) == [lo, hi]  # seeded: the same every time


def test_interval_narrows_with_more_questions():
    widths = []
    for n in (100, 400, 1600):
        correct = [i % 5 != 0 for i in range(n)]  # accuracy 0.8 at every size
        lo, hi = ev.bootstrap_interval(correct)
        widths.append(hi - lo)
    assert widths[0] > widths[1] > widths[2]
    # the width falls as 1 / sqrt(n): about half for four times the questions
    assert widths[0] / widths[1] == pytest.approx(2, rel=0.2) and widths[1] / widths[2] == pytest.approx(2, rel=0.2)


def test_paired_change_interval_resamples_the_same_questions_for_both():
    rng = np.random.default_rng(3)
    base = rng.random(300) < 0.9
    method = base.copy()
    method[:15] = False  # 15 answers lost (some were wrong already), nothing else changes
    change = 100 * (method.mean() - base.mean())
    lo, hi = ev.paired_change_interval(method, base)
    assert lo <= change <= hi < 0
    # paired: far narrower than the interval of two independent accuracies would be
    a, b = ev.bootstrap_interval(method), ev.bootstrap_interval(base)
    assert hi - lo < 0.6 * 100 * math.hypot(a[1] - a[0], b[1] - b[0])
    assert ev.paired_change_interval(base, base) == [0.0, 0.0]


def test_add_intervals_per_row_and_kind():
    gold = ["a", "b"] * 20
    kinds = ["x", "y"] * 20
    rows = [dict(answers=list(gold)), dict(answers=["a"] * 40)]  # the second gets every "y" question wrong
    ev.add_intervals(rows, gold, kinds)
    assert rows[0]["ci"] == [1.0, 1.0] and rows[0]["change_ci"] is None and rows[0]["change"] == 0.0
    assert rows[1]["per_kind_ci"] == {"x": [1.0, 1.0], "y": [0.0, 0.0]}
    assert rows[1]["change"] == -50.0 and rows[1]["change_ci"][0] < -50 < rows[1]["change_ci"][1]
    assert rows[1]["ci"] == ev.bootstrap_interval([g == "a" for g in gold])


def test_split_by_camera_motion_resamples_each_group_alone():
    rng = np.random.default_rng(5)
    motion = [bool(m) for m in rng.random(60) < 0.5]
    items = [ev.QAItem(np.zeros((1, 1, 1, 3), np.uint8), "q", "a", "k", motion=m) for m in motion]
    labels = ev.motion_labels(items + [ev.QAItem(np.zeros((1, 1, 1, 3), np.uint8), "q", "a")])
    assert labels[-1] == "" and set(labels[:-1]) == {ev.MOVING, ev.STILL}
    labels = labels[:-1]
    gold = ["a"] * 60
    answers = ["b" if m and i % 3 else "a" for i, m in enumerate(motion)]  # loses 2 in 3 moving-camera questions
    rows = [dict(answers=gold), dict(answers=answers)]
    ev.add_intervals(rows, gold, ["k"] * 60, motions=labels)
    moving = [a == "a" for a, m in zip(answers, motion) if m]
    assert rows[1]["per_motion_ci"][ev.STILL] == [1.0, 1.0]
    assert rows[1]["per_motion_ci"][ev.MOVING] == ev.bootstrap_interval(moving)  # its own questions only
    row = ev._accuracy_row("m", {}, 0.2, answers, [0.2] * 60, ["k"] * 60, gold, labels)
    assert row["per_motion"] == {ev.MOVING: float(np.mean(moving)), ev.STILL: 1.0}
    assert ev._accuracy_row("m", {}, 0.2, answers, [], ["k"] * 60, gold)["per_motion"] == {}


# ------------------------------------------------------------------------------------------ shards


def test_shard_indices_split_whole_batches():
    assert ev.shard_indices(10, 4, (0, 1)) == list(range(10))
    assert ev.shard_indices(10, 4, (0, 2)) == [0, 1, 2, 3, 8, 9]
    assert ev.shard_indices(10, 4, (1, 2)) == [4, 5, 6, 7]
    assert ev.shard_indices(10, 4, (3, 4)) == []  # more shards than batches: nothing to answer
    for n in (1, 2, 3, 5):
        assert sorted(q for i in range(n) for q in ev.shard_indices(23, 3, (i, n))) == list(range(23))
    assert ev.parse_shard("1/2") == (1, 2)
    for bad in ("2/2", "1", "a/b", "-1/2", "0/0"):
        with pytest.raises(ValueError, match="--shard must be i/n"):
            ev.parse_shard(bad)


@pytest.fixture(scope="module")
def shipped():
    from framefusion.tools.answer import load_video_model
    from framefusion.tools.loading import SHIPPED_MODEL, ModelOptions

    loaded = load_video_model(SHIPPED_MODEL, ModelOptions(device="cpu"))
    return loaded.model, loaded.processor


def test_two_shards_give_the_answers_and_table_of_one_process(shipped, tmp_path):
    model, processor = shipped
    items = ev.synthetic_test_set(COUNT)
    configs = [FrameFusionConfig(cost=0.2), RandomPruneConfig(cost=0.2)]
    meta = dict(model="shipped")
    one = ev.evaluate(model, processor, items, configs, batch_size=BATCH, out_dir=tmp_path / "one", meta=meta,
                      progress=False)  # fmt: skip
    for i in (1, 0):  # any order
        partial = ev.evaluate_shard(model, processor, items, configs, (i, 2), batch_size=BATCH, meta=meta,
                                    progress=False, out_dir=tmp_path / "shards")  # fmt: skip
        assert partial["indices"] == ev.shard_indices(COUNT, BATCH, (i, 2))
    merged = ev.merge_shards(ev.load_shards([tmp_path / "shards"]), out_dir=tmp_path / "merged")
    assert [r["answers"] for r in merged] == [r["answers"] for r in one]
    for a, b in zip(one, merged):
        for key in ("label", "accuracy", "correct", "total", "achieved_cost", "per_kind", "ci", "per_kind_ci",
                    "change", "change_ci", "drop"):  # fmt: skip
            assert a[key] == b[key], key
    assert (tmp_path / "one" / "eval.md").read_text() == (tmp_path / "merged" / "eval.md").read_text()
    saved = json.loads((tmp_path / "merged" / "eval.json").read_text())
    assert saved["shards"] == 2 and "bootstrap" in saved["interval"] and len(saved["kinds"]) == COUNT
    # a shard missing, or given twice, is refused
    partials = ev.load_shards([tmp_path / "shards"])
    with pytest.raises(ValueError, match="each once"):
        ev.merge_shards(partials[:1])
    with pytest.raises(ValueError, match="each once"):
        ev.merge_shards([partials[0], partials[0]])


def test_answers_equal_a_plain_loop_and_the_vision_tower_runs_once_per_batch(shipped):
    """eval answers batch by batch, every setting on one processor output and one vision pass: the same
    first words as a plain loop that prepares and answers every setting afresh."""
    from framefusion.data.synthetic_qa import chat_text

    model, processor = shipped
    items = ev.synthetic_test_set(2 * BATCH, start=100)
    configs = [FrameFusionConfig(cost=0.2), RandomPruneConfig(cost=0.15)]
    vision_calls = []
    hook = model.model.visual.register_forward_hook(lambda *_: vision_calls.append(1))
    try:
        rows = ev.evaluate(model, processor, items, configs, batch_size=BATCH, progress=False)
    finally:
        hook.remove()
    assert len(vision_calls) == 2  # two batches, three settings each
    for row, config in zip(rows, [None, *configs]):
        expected = []
        for i in range(0, len(items), BATCH):
            chunk = items[i : i + BATCH]
            inputs = processor(text=[chat_text(processor, it.question) for it in chunk],
                               videos=[it.video for it in chunk], padding=True, return_tensors="pt")  # fmt: skip
            with framefusion.apply(model, config) if config else contextlib.nullcontext(), torch.no_grad():
                out = model.generate(**inputs, max_new_tokens=2, do_sample=False)
            texts = processor.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
            expected += [ev.first_word(t) for t in texts]
        assert row["answers"] == expected, row["label"]
    assert "get_video_features" not in vars(model.model)  # the reuse is gone after the run


def test_eval_command_shard_and_merge(tmp_path, capsys):
    common = ["eval", "--count", str(COUNT), "--batch", str(BATCH), "--costs", "0.2", "--methods", "framefusion"]
    assert main([*common, "--out", str(tmp_path / "one"), "--json"]) == 0
    one = json.loads(capsys.readouterr().out)
    for i in (0, 1):
        assert main([*common, "--shard", f"{i}/2", "--out", str(tmp_path / "shards")]) == 0
        assert f"shard {i}/2: 12 of {COUNT} questions answered" in capsys.readouterr().out
    assert main(["eval", "--merge", str(tmp_path / "shards"), "--out", str(tmp_path / "merged"), "--json"]) == 0
    merged = json.loads(capsys.readouterr().out)
    assert merged == one  # every field of every row (answers are left out of --json)
    assert (tmp_path / "one" / "eval.md").read_text() == (tmp_path / "merged" / "eval.md").read_text()
    table = (tmp_path / "one" / "eval.md").read_text()
    acc = one[0]
    assert f"| {acc['accuracy']:.3f} [{acc['ci'][0]:.3f}, {acc['ci'][1]:.3f}] ({acc['correct']}/{COUNT}) |" in table
    assert "change, 95% CI (points)" in table and "percentile bootstrap" in table
    assert main(["eval", "--shard", "2/2"]) == 2 and "--shard must be i/n" in capsys.readouterr().err
    assert main(["eval", "--merge", str(tmp_path / "nothing")]) == 2


def test_accelerate_launch_two_cpu_processes_equal_one(tmp_path):
    pytest.importorskip("accelerate")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]),
           "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "HF_HOME": str(tmp_path / "hf"),
           "MASTER_PORT": "29517"}  # fmt: skip
    args = ["-m", "framefusion", "eval", "--count", str(COUNT), "--batch", str(BATCH), "--costs", "0.2",
            "--methods", "framefusion", "random", "--threads", "1"]  # fmt: skip
    one = subprocess.run([sys.executable, *args, "--out", str(tmp_path / "one")], capture_output=True, text=True,
                         env=env, timeout=600)  # fmt: skip
    assert one.returncode == 0, one.stderr
    # on a machine without a GPU, accelerate launch starts several processes only with --multi_gpu;
    # ACCELERATE_USE_CPU makes them a gloo group on the CPU
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_port", "29517"]  # fmt: skip
    two = subprocess.run([*launch, *args, "--out", str(tmp_path / "two")], capture_output=True, text=True, env=env,
                         timeout=600)  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("| method |") == 1  # only rank 0 prints
    a = json.loads((tmp_path / "one" / "eval.json").read_text())
    b = json.loads((tmp_path / "two" / "eval.json").read_text())
    assert b["shards"] == 2 and "shards" not in a
    assert [r["answers"] for r in a["rows"]] == [r["answers"] for r in b["rows"]]
    assert a["rows"] == b["rows"]
    assert (tmp_path / "one" / "eval.md").read_text() == (tmp_path / "two" / "eval.md").read_text()


# ------------------------------------------------------------------------------------------ lmms-eval


def test_lmms_eval_entry_point_is_declared():
    from pathlib import Path

    text = (Path(__file__).parent.parent / "pyproject.toml").read_text()  # no tomllib on Python 3.10
    group = text.split('[project.entry-points."lmms_eval.models"]\n', 1)[1].split("\n[", 1)[0]
    assert 'framefusion = "framefusion.integrations.lmms_eval:manifests"' in group


def test_lmms_eval_classes_are_built_as_one_process_on_a_multi_process_cpu_run(monkeypatch):
    import types

    import torch

    from framefusion.integrations import lmms_eval as lm

    module = types.ModuleType("fake_lmms_model")
    module.Accelerator = object
    sys.modules["fake_lmms_model"] = module
    cls = type("Fake", (), {"__module__": "fake_lmms_model"})
    try:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        monkeypatch.setenv("WORLD_SIZE", "2")
        with lm._built_as_one_process(cls):
            acc = module.Accelerator()
            assert acc.num_processes == 1 and acc.local_process_index == 0 and acc.device.type == "cpu"
        assert module.Accelerator is object
        monkeypatch.setenv("WORLD_SIZE", "1")  # one process: nothing replaced
        with lm._built_as_one_process(cls):
            assert module.Accelerator is object
    finally:
        del sys.modules["fake_lmms_model"]


def test_lmms_eval_framefusion_model_name_when_lmms_eval_is_installed():
    pytest.importorskip("lmms_eval")
    from lmms_eval.api.model import lmms
    from lmms_eval.models.registry_v2 import ModelManifest

    from framefusion.integrations import lmms_eval as lm

    (manifest,) = lm.manifests()
    assert isinstance(manifest, ModelManifest) and manifest.model_id == "framefusion"
    assert issubclass(lm.FrameFusionLMM, lmms) and lm.FrameFusionLMM.is_simple
    assert getattr(lmms.create_from_arg_string, "_framefusion", False)  # framefusion_* on the stock classes
    with pytest.raises(ValueError, match="needs base_model="):
        lm.FrameFusionLMM.create_from_arg_string("pretrained=x,framefusion_cost=0.3")
