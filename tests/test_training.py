"""The training script of the shipped model runs end to end (tiny sizes, a few steps)."""

import importlib.util
import json
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "train_synthetic.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("train_synthetic", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_two_stage_training_runs_and_saves_a_loadable_model(tmp_path):
    from transformers import AutoProcessor, Qwen2VLForConditionalGeneration

    train = _load_script()
    out = tmp_path / "model"
    args = ["--out", str(out), "--vision-steps", "3", "--steps", "3", "--warmup", "1", "--batch", "2", "--val", "4",
            "--eval-every", "3", "--hidden", "32", "--intermediate", "64", "--layers", "2", "--heads", "2",
            "--vision-dim", "32", "--frames", "8", "--train-frames", "4", "8", "--threads", "1"]  # fmt: skip
    result = train.main(args)
    assert result["steps"] == 3 and 0.0 <= result["best_validation_accuracy"] <= 1.0
    info = json.loads((out / "training.json").read_text())
    stages = [entry.get("stage", "qa") for entry in info["log"]]
    assert stages == ["vision", "qa"] and info["frames"] == 8 and info["train_frames"] == [4, 8]
    model = Qwen2VLForConditionalGeneration.from_pretrained(out, local_files_only=True)
    processor = AutoProcessor.from_pretrained(out, local_files_only=True)
    assert model.config.text_config.num_hidden_layers == 2
    assert len(processor.tokenizer) == model.config.text_config.vocab_size
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_token_heads_score_only_tokens_that_show_an_object():
    train = _load_script()
    heads = train.TokenHeads(8)
    features = torch.randn(5, 8)
    targets = {"colour_a": torch.tensor([-1, -1, 0, 2, 4]), "colour_b": torch.tensor([-1, 1, 1, 1, 1]),
               "role": torch.tensor([0, 1, 1, 2, 2]), "direction": torch.tensor([-1, 3, 3, -1, -1])}  # fmt: skip
    loss, accs = heads.loss(features, targets)
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    assert all(p.grad is not None for p in heads.parameters())
    predicted = heads.heads["direction"](features).argmax(-1)
    assert accs["direction"] == float((predicted[1:3] == 3).float().mean())  # only tokens of the moving object
