"""One registry of methods drives eval, bench and the lmms-eval integration."""

import argparse

import pytest
import torch
from conftest import make_inputs

import framefusion
from framefusion.commands import bench as bench_command
from framefusion.commands import eval as eval_command
from framefusion.integrations.lmms_eval import config_from_settings
from framefusion.tiny_models import build_tiny_model
from framefusion.registry import METHODS, config_for, method_names


def _choices(add_arguments, dest):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return next(a.choices for a in parser._actions if a.dest == dest)


def test_every_command_and_integration_knows_every_registered_method():
    names = method_names()
    assert list(_choices(eval_command.add_arguments, "methods")) == names
    assert set(_choices(bench_command.add_arguments, "baselines")) == set(names) - {"framefusion"}
    for name in names:
        config = config_from_settings({"framefusion_method": name, "framefusion_cost": "0.4"})
        assert config == config_for(name, 0.4, similarity_threshold=0.6, ratio_threshold=0.1)


@pytest.mark.parametrize("name", list(METHODS))
def test_each_registered_method_runs_within_its_budget(name, processors, videos):
    config = config_for(name, 0.3, similarity_threshold=0.7, ratio_threshold=0.1)
    assert config.cost == 0.3
    if "similarity_threshold" in METHODS[name].options:
        assert config.similarity_threshold == 0.7
    model = build_tiny_model("qwen2_vl", num_layers=4, processor=processors["qwen2_vl"])
    inputs = make_inputs(processors["qwen2_vl"], ["What moves?"], videos=[videos[8]])
    with framefusion.apply(model, config) as handle, torch.no_grad():
        model(**inputs)
        report = handle.last_report()
    assert report.achieved_cost[0] <= 0.3 and report.vision_tokens_per_layer[0][-1] < report.vision_tokens[0]


def test_an_unknown_method_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown method 'no-such-method'; known: framefusion, merge-only"):
        config_for("no-such-method", 0.3)


def test_evs_rate_is_the_budget_one_minus_rate():
    from framefusion import EVSConfig

    assert EVSConfig(rate=0.75).cost == pytest.approx(0.25) and EVSConfig().cost == 0.3
    for bad, words in [(dict(rate=1.0), "rate must be in [0, 1)"), (dict(cost=0.3, rate=0.5), "either cost or rate")]:
        with pytest.raises(ValueError, match=words.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
            EVSConfig(**bad)


@pytest.mark.parametrize("name", list(METHODS))
def test_each_registered_method_decodes_exactly_and_batches_as_alone(name, processors, videos):
    from conftest import batch_equals_alone, replay_logits

    processor = processors["qwen2_vl"]
    model = build_tiny_model("qwen2_vl", num_layers=4, processor=processor)
    config = config_for(name, 0.3)
    questions, clips = ["What moves?", "Which colour is the square?"], [videos[8], videos[16]]
    with framefusion.apply(model, config) as handle:
        batch_report, single, tokens, logits, report = batch_equals_alone(model, handle, processor, questions, clips)
    replayed = replay_logits(model, single, tokens, report.decisions, counts=report.vision_tokens_per_layer)
    torch.testing.assert_close(replayed, logits, atol=2e-5, rtol=1e-5)
