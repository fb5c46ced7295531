"""Input safety: bad videos get clear errors and leave a patched model usable; no remote code, network
or pickle; random recorded decisions through left-padded batches; a bounded stress run."""

from __future__ import annotations

import ast
import dataclasses
import gc
import json
import os
import socket
import subprocess
import sys
import textwrap
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import greedy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import framefusion
from framefusion import FrameFusionConfig, Replay
from framefusion.cli import main
from framefusion.tiny_models import make_synthetic_video, read_video, write_video
from framefusion.tiny_models.zoo import build, video_inputs
from framefusion.report import Decision

PACKAGE = Path(framefusion.__file__).resolve().parent
SOURCES = sorted(PACKAGE.rglob("*.py")) + sorted((PACKAGE.parent / "scripts").glob("*.py"))
NOOP = FrameFusionConfig(cost=1.0, similarity_threshold=1.5)
REDUCE = FrameFusionConfig(cost=0.3, similarity_threshold=0.9)
TINY_DEMO = ["--layers", "1", "--hidden", "64", "--size", "112", "--repeats", "1", "--new-tokens", "1", "--json"]


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Every test here fails loudly if anything tries to open a connection or resolve a name."""

    def refuse(*args, **kwargs):
        raise OSError(f"network access attempted in a test: {args[1:] or args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


# ---------------------------------------------------------------------------------------------
# 1. Bad video files: read_video and the CLI
# ---------------------------------------------------------------------------------------------


def _zero_frame_video(path: Path) -> Path:
    """An AVI with a video stream and no frames (MP4 drops a stream that never got a packet)."""
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width = stream.height = 112
        stream.pix_fmt = "yuv420p"
        container.start_encoding()
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    good = write_video(make_synthetic_video(num_frames=8, size=112, seed=3), root / "good.mp4")
    data = good.read_bytes()
    (root / "empty.mp4").write_bytes(b"")
    (root / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (root / "corrupt.mp4").write_bytes(np.random.default_rng(0).bytes(len(data)))
    with wave.open(str(root / "sound.wav"), "wb") as w:  # a real file with an audio stream only
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(np.zeros(8000, np.int16).tobytes())
    (root / "notes.txt").write_text("not a video\n" * 50)
    (root / "folder.mp4").mkdir()
    _zero_frame_video(root / "zero_frames.avi")
    write_video(make_synthetic_video(num_frames=1, size=112, seed=4), root / "one_frame.mp4")
    return root


# name -> (exception, words the message must contain besides the file name)
BAD_FILES = {
    "missing.mp4": (FileNotFoundError, ["not found"]),
    "empty.mp4": (ValueError, ["empty", "expected a video file"]),
    "truncated.mp4": (ValueError, ["could not decode", "truncated or corrupt", "expected a video file"]),
    "corrupt.mp4": (ValueError, ["could not decode", "expected a video file"]),
    "sound.wav": (ValueError, ["no video stream", "audio", "expected a video file"]),
    "notes.txt": (ValueError, ["no video stream", "text", "expected a video file"]),
    "folder.mp4": (ValueError, ["directory", "expected a video file"]),
    "zero_frames.avi": (ValueError, ["0 frames", "at least 1 frame"]),
}


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_read_video_rejects_bad_files_naming_file_and_what_is_expected(files, name):
    error, words = BAD_FILES[name]
    with pytest.raises(error) as exc:
        read_video(files / name)
    message = str(exc.value)
    assert str(files / name) in message
    for word in words:
        assert word in message, message


def test_read_video_frame_counts(files):
    one = read_video(files / "one_frame.mp4")
    assert one.shape == (1, 112, 112, 3) and one.dtype == np.uint8
    assert read_video(files / "one_frame.mp4", num_frames=1).shape == (1, 112, 112, 3)
    with pytest.raises(ValueError, match=r"has 1 frame, fewer than the 4 asked for; ask for 1 to 1"):
        read_video(files / "one_frame.mp4", num_frames=4)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match=rf"num_frames must be an integer >= 1, got {bad!r}"):
            read_video(files / "good.mp4", num_frames=bad)


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_cli_demo_rejects_bad_files_with_exit_2(files, name, capsys):
    _, words = BAD_FILES[name]
    assert main(["demo", "--video", str(files / name), *TINY_DEMO]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("framefusion: error: ")
    assert str(files / name) in captured.err
    for word in words:
        assert word in captured.err
    assert captured.out == ""


def test_cli_demo_one_frame_video(files, capsys):
    path = str(files / "one_frame.mp4")
    assert main(["demo", "--video", path, "--frames", "4", *TINY_DEMO]) == 2
    assert "has 1 frame, fewer than the 4 asked for" in capsys.readouterr().err
    assert main(["demo", "--video", path, "--frames", "1", *TINY_DEMO]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["frames"] == 1 and result["video_tokens"] == 16  # one temporal patch of 4x4 merged tokens


@pytest.mark.parametrize(
    "argv, words",
    [
        (["demo", "--size", "0"], ["--size", "positive multiple of 28", "got 0"]),
        (["demo", "--size", "-56"], ["--size", "positive multiple of 28", "got -56"]),
        (["demo", "--size", "10"], ["--size", "multiple of 28", "got 10"]),
        (["demo", "--frames", "0"], ["--frames", ">= 1", "0"]),
        (["bench", "--frames", "0"], ["--frames", ">= 1", "0"]),
        # bench reads its video before building a (large) model: a bad file fails at once
        (["bench", "--video", "/no/such/clip.mp4", "--costs", "0.3"], ["not found", "/no/such/clip.mp4"]),
    ],
)
def test_cli_bad_sizes_and_counts_exit_2(argv, words, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("framefusion: error: ")
    for word in words:
        assert word in err


# ---------------------------------------------------------------------------------------------
# 2. Bad video arrays and failing calls leave the patched model usable
# ---------------------------------------------------------------------------------------------

_MODELS: dict = {}


def tiny(family="qwen2_vl", attn="sdpa"):
    if (family, attn) not in _MODELS:
        _MODELS[family, attn] = build(family, num_layers=4, attn_implementation=attn)
    return _MODELS[family, attn]


def _raise_in_layer(model, layer: int, decode_step: int | None):
    """A pre-hook that fails once: at prefill (decode_step None) or at the given decode step."""
    seen = {"decode": 0, "fired": False}

    def hook(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        if seen["fired"]:
            return None
        if decode_step is None and hidden.shape[1] > 1:
            seen["fired"] = True
            raise RuntimeError(f"simulated failure in layer {layer} at prefill")
        if decode_step is not None and hidden.shape[1] == 1:
            seen["decode"] += 1
            if seen["decode"] == decode_step:
                seen["fired"] = True
                raise RuntimeError(f"simulated failure in layer {layer} at decode step {decode_step}")
        return None

    return model.model.language_model.layers[layer].register_forward_pre_hook(hook, with_kwargs=True)


def _failures(model, processor, videos):
    """name -> (call that must raise, exception type, words its message must contain)."""
    clip = videos[16]
    good = video_inputs(processor, ["What moves?"], [clip])

    def with_layer_failure(layer, step):
        def run():
            handle = _raise_in_layer(model, layer, step)
            try:
                greedy(model, good, n=4)
            finally:
                handle.remove()

        return run

    def forward(**changes):
        def run():
            with torch.no_grad():
                model(**dict(good, **changes))

        return run

    grid = good["video_grid_thw"].clone()
    grid[0, 0] *= 2
    ids = good["input_ids"].clone()
    ids[0, 3] = model.config.text_config.vocab_size + 7
    return {
        "zero-frame video": (
            lambda: video_inputs(processor, ["q"], [clip[:0]]),
            ValueError,
            ["video 0", "(0, 112, 112, 3)", "T >= 1"],
        ),
        "frame without a time axis": (
            lambda: video_inputs(processor, ["q"], [clip[0]]),
            ValueError,
            ["(112, 112, 3)", "(T, H, W, 3)", "video[None]"],
        ),
        "1 x 5000 frames": (
            lambda: video_inputs(processor, ["q"], [np.zeros((2, 1, 5000, 3), np.uint8)]),
            ValueError,
            ["rejected", "(2, 1, 5000, 3)", "aspect ratio must be smaller than 200", "patch_size=14", "merge_size=2"],
        ),
        "more questions than videos": (
            lambda: video_inputs(processor, ["a", "b"], [clip]),
            ValueError,
            ["2 questions", "1 videos"],
        ),
        "pixels of another video": (
            forward(pixel_values_videos=good["pixel_values_videos"][: len(good["pixel_values_videos"]) // 2]),
            Exception,
            [],
        ),
        "grid that does not match the tokens": (forward(video_grid_thw=grid), ValueError, ["video_grid_thw"]),
        "token id out of the vocabulary": (forward(input_ids=ids), IndexError, []),
        "failure in the middle of prefill": (with_layer_failure(2, None), RuntimeError, ["layer 2 at prefill"]),
        "failure in the middle of decoding": (with_layer_failure(1, 2), RuntimeError, ["decode step 2"]),
    }


@pytest.mark.parametrize("config", [NOOP, REDUCE], ids=["noop", "reduce"])
def test_failures_leave_the_patched_model_usable(videos, config):
    model, processor = tiny()
    inputs = video_inputs(processor, ["Which way does the red shape move?"], [videos[16]])
    untouched = greedy(model, inputs, n=4)
    with framefusion.apply(model, config) as handle:
        reference = greedy(model, inputs, n=4)
        counts = handle.last_report().vision_tokens_per_layer
        if config is NOOP:
            assert torch.equal(reference[0], untouched[0]) and torch.equal(reference[1], untouched[1])
        else:
            assert counts[0][-1] < counts[0][0], "the case must reduce"
        for name, (call, error, words) in _failures(model, processor, videos).items():
            with pytest.raises(error) as exc:
                call()
            for word in words:
                assert word in str(exc.value), (name, str(exc.value))
            assert handle.active and model._framefusion_handle is handle, name
            tokens, logits = greedy(model, inputs, n=4)
            assert torch.equal(tokens, reference[0]) and torch.equal(logits, reference[1]), name
            assert handle.last_report().vision_tokens_per_layer == counts, name
    assert all(not m._forward_pre_hooks for m in model.modules())
    tokens, logits = greedy(model, inputs, n=4)
    assert torch.equal(tokens, untouched[0]) and torch.equal(logits, untouched[1])


@pytest.mark.parametrize(
    "shape",
    [(1, 112, 112, 3), (4, 10, 10, 3), (3, 30, 300, 3)],
    ids=["one frame", "10x10", "30x300"],
)
def test_small_and_odd_videos_the_processor_accepts(videos, shape):
    """One frame (padded to a temporal patch), tiny and thin frames (resized to at least 56x56 pixels):
    accepted; the no-op equals the untouched model and a reduction stays within its budget."""
    model, processor = tiny()
    clip = make_synthetic_video(num_frames=shape[0], size=max(shape[1:3]), seed=5)[:, : shape[1], : shape[2]]
    inputs = video_inputs(processor, ["What is it?"], [clip])
    untouched = greedy(model, inputs, n=3)
    with framefusion.apply(model, NOOP):
        noop = greedy(model, inputs, n=3)
    assert torch.equal(noop[0], untouched[0]) and torch.equal(noop[1], untouched[1])
    with framefusion.apply(model, REDUCE) as handle:
        greedy(model, inputs, n=3)
        report = handle.last_report()
    n = report.vision_tokens[0]
    assert n == int((inputs["input_ids"] == model.config.video_token_id).sum()) > 0
    assert report.achieved_cost[0] <= 0.3


def test_processors_that_reject_one_frame_say_what_they_need(videos):
    """Qwen3-VL groups frames in temporal patches of 2 and rejects a single frame."""
    _, processor = tiny("qwen3_vl")
    with pytest.raises(ValueError) as exc:
        video_inputs(processor, ["q"], [videos[2][:1]])
    message = str(exc.value)
    for word in ("Qwen3VLProcessor rejected", "(1, 112, 112, 3)", "temporal_factor:2", "temporal_patch_size=2"):
        assert word in message, message


# ---------------------------------------------------------------------------------------------
# 3. Security: no remote code, no network, no pickle
# ---------------------------------------------------------------------------------------------


def _trees():
    for path in SOURCES:
        yield path, ast.parse(path.read_text(), filename=str(path))


def _parents(tree):
    parents = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[child] = node
    return parents


def _function_params(node, parents) -> set[str]:
    names: set[str] = set()
    while node in parents:
        node = parents[node]
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            a = node.args
            names |= {x.arg for x in a.posonlyargs + a.args + a.kwonlyargs}
            names |= {x.arg for x in (a.vararg, a.kwarg) if x is not None}
    return names


def _root_name(node) -> str | None:
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def test_from_pretrained_never_turns_on_trust_remote_code():
    """Every from_pretrained call passes trust_remote_code only from an explicit user argument (a
    parameter of the enclosing function, or a CLI flag off by default); nothing sets it True."""
    calls = 0
    for path, tree in _trees():
        parents = _parents(tree)
        for node in ast.walk(tree):
            where = f"{path.relative_to(PACKAGE.parent)}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.keyword) and node.arg == "trust_remote_code":
                assert not (isinstance(node.value, ast.Constant) and node.value.value), where
            if isinstance(node, ast.Dict):
                for key, value in zip(node.keys, node.values):
                    if isinstance(key, ast.Constant) and key.value == "trust_remote_code":
                        assert isinstance(value, ast.Constant) and value.value is False, where
            if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
                assert node.slice.value != "trust_remote_code" or isinstance(node.ctx, ast.Load), where
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name == "add_argument" and any(
                isinstance(a, ast.Constant) and a.value == "--trust-remote-code" for a in node.args
            ):
                kw = {k.arg: k.value for k in node.keywords}
                assert getattr(kw.get("action"), "value", None) == "store_true", where
                assert "default" not in kw or getattr(kw["default"], "value", True) is False, where
            if name == "setdefault" and node.args and getattr(node.args[0], "value", None) == "trust_remote_code":
                raise AssertionError(f"{where}: trust_remote_code set by default")
            if name != "from_pretrained":
                continue
            calls += 1
            params = _function_params(node, parents)
            for k in node.keywords:
                if k.arg == "trust_remote_code":
                    value = k.value
                    explicit = (isinstance(value, ast.Constant) and value.value is False) or (
                        _root_name(value) in params
                        and (isinstance(value, ast.Name) or value.attr == "trust_remote_code")
                    )
                    assert explicit, f"{where}: trust_remote_code must come from a user argument"
                elif k.arg is None:  # **kwargs: only what the caller passed in
                    assert _root_name(k.value) in params, f"{where}: **{ast.unparse(k.value)} is not a user argument"
    assert calls >= 2, "expected the from_pretrained calls of the bench command"


def test_no_pickle_loading():
    """No pickle.load(s), no torch.load without weights_only=True, no numpy.load(allow_pickle=True)."""
    unsafe_modules = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}
    for path, tree in _trees():
        for node in ast.walk(tree):
            where = f"{path.relative_to(PACKAGE.parent)}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Import):
                assert not {a.name.split(".")[0] for a in node.names} & unsafe_modules, where
            if isinstance(node, ast.ImportFrom):
                assert (node.module or "").split(".")[0] not in unsafe_modules, where
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            kw = {k.arg: k.value for k in node.keywords}
            owner = _root_name(node.func)
            if node.func.attr == "load" and owner == "torch":
                value = kw.get("weights_only")
                assert isinstance(value, ast.Constant) and value.value is True, (
                    f"{where}: torch.load needs weights_only=True"
                )
            if node.func.attr == "load" and owner in ("np", "numpy"):
                value = kw.get("allow_pickle")
                assert value is None or (isinstance(value, ast.Constant) and value.value is False), where
            assert node.func.attr not in ("read_pickle", "Unpickler"), where


def test_import_and_generate_without_network(tmp_path):
    """In a fresh interpreter with network access refused (and hub offline mode NOT set): import
    framefusion, apply it to a tiny model and generate."""
    script = textwrap.dedent(
        """
        import socket

        def refuse(*args, **kwargs):
            raise OSError(f"network access attempted: {args[1:] or args}")

        socket.socket.connect = socket.socket.connect_ex = refuse
        socket.create_connection = socket.getaddrinfo = refuse

        import framefusion
        from framefusion.tiny_models import make_synthetic_video
        from framefusion.tiny_models.zoo import build, video_inputs

        model, processor = build("qwen2_vl", num_layers=2)
        inputs = video_inputs(processor, ["What moves?"], [make_synthetic_video(num_frames=4, size=56)])
        with framefusion.apply(model, framefusion.FrameFusionConfig(cost=0.5)) as handle:
            out = model.generate(**inputs, max_new_tokens=2, do_sample=False)
            report = handle.last_report()
        assert out.shape[1] == inputs["input_ids"].shape[1] + 2
        assert report.vision_tokens[0] > 0 and report.achieved_cost[0] <= 0.5
        print("no network: ok")
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_HOME=str(tmp_path / "hf"), OMP_NUM_THREADS="2")
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "no network: ok" in result.stdout
    assert "network access attempted" not in result.stderr


# ---------------------------------------------------------------------------------------------
# 4. Batch packing under random recorded decisions (hypothesis)
# ---------------------------------------------------------------------------------------------

VIDEO_TOKENS = {16: 128, 8: 64, 2: 16, None: 0}  # 112x112 frames: 16 merged tokens per temporal patch


def _random_decisions(rng: np.random.Generator, n: int, kinds: list[str], keep_share: float) -> list[Decision]:
    """Decisions over the tokens present at each layer: prunes with random keep masks, merges with
    random groups (each token joins an earlier group or starts its own)."""
    decisions = []
    for layer, kind in enumerate(kinds):
        if n == 0 or kind == "none":
            continue
        if kind == "prune":
            keep = torch.from_numpy(rng.random(n) < keep_share)
            decisions.append(Decision(layer, "prune", keep))
        else:
            root = np.arange(n)
            for i in range(1, n):
                if rng.random() > keep_share:
                    root[i] = root[rng.integers(0, i)]
            root = torch.from_numpy(root)
            keep = root == torch.arange(n)
            decisions.append(Decision(layer, "merge", keep, root))
        n = int(keep.sum())
    return decisions


samples = st.tuples(
    st.sampled_from([8, 2, None]),
    st.lists(st.sampled_from(["none", "prune", "merge"]), min_size=4, max_size=4),
    st.floats(0.0, 1.0),
    st.sampled_from(["Where?", "Which shape moves first, and where does it go?", "Colour of the square?"]),
)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    batch=st.lists(samples, min_size=1, max_size=3),
    seed=st.integers(0, 2**32 - 1),
    attn=st.sampled_from(["sdpa", "eager"]),
)
def test_random_decisions_in_a_padded_batch_equal_each_sample_alone(videos, batch, seed, attn):
    model, processor = tiny(attn=attn)
    rng = np.random.default_rng(seed)
    decisions = [_random_decisions(rng, VIDEO_TOKENS[clip], kinds, share) for clip, kinds, share, _ in batch]
    questions = [q for *_, q in batch]
    clips = [videos[clip] if clip else None for clip, *_ in batch]
    inputs = video_inputs(processor, questions, clips)
    width = inputs["input_ids"].shape[1]
    with framefusion.apply(model, Replay(decisions)) as handle:
        tokens, logits = greedy(model, inputs, n=2)
        report = handle.last_report()
    for b in range(len(batch)):
        single = video_inputs(processor, [questions[b]], [clips[b]])
        with framefusion.apply(model, Replay([decisions[b]])) as handle:
            t1, l1 = greedy(model, single, n=2)
            alone = handle.last_report()
        assert alone.vision_tokens_per_layer[0] == report.vision_tokens_per_layer[b]
        shift = width - single["input_ids"].shape[1]
        assert [p + shift for p in alone.kept_positions[0]] == report.kept_positions[b]
        assert torch.equal(tokens[b : b + 1], t1)
        torch.testing.assert_close(logits[b : b + 1], l1, atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------------------------------------
# 5. A bounded stress run: no growth of memory or per-thread state
# ---------------------------------------------------------------------------------------------


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _tensors(obj, seen=None) -> list[torch.Tensor]:
    """Tensors reachable from obj through dataclasses, dicts, lists and tuples."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return []
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        return [obj]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        items = [getattr(obj, f.name) for f in dataclasses.fields(obj)]
    elif isinstance(obj, dict):
        items = list(obj.values())
    elif isinstance(obj, (list, tuple)):
        items = list(obj)
    else:
        return []
    return [t for x in items for t in _tensors(x, seen)]


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc (Linux)")
def test_stress_many_generations_do_not_grow_memory_or_state():
    model, processor = tiny()
    rng = np.random.default_rng(0)
    pool = {
        (frames, size): make_synthetic_video(num_frames=frames, size=size, seed=frames + size)
        for frames in (1, 2, 4, 6)
        for size in (56, 112)
    }
    keys = list(pool)
    hooks_before = sum(len(m._forward_pre_hooks) for m in model.modules())

    def job(i):
        batch = 1 + i % 3
        clips = [pool[keys[int(k)]] for k in rng.integers(0, len(keys), batch)]
        if i % 5 == 4:
            clips[-1] = None  # a row without video
        questions = ["Which way?", "What shapes are in the video, and what colours?", "Count."][:batch]
        return video_inputs(processor, questions, clips), 1 + i % 2

    with framefusion.apply(model, FrameFusionConfig(cost=0.3, similarity_threshold=0.8)) as handle:
        largest = video_inputs(processor, ["Which way?"] * 2, [pool[6, 112]] * 2)
        sizes, rss = [], []
        for i in range(30):
            inputs, n = (largest, 2) if i % 6 == 0 else job(i)
            greedy(model, inputs, n=n)
            report = handle.last_report()
            batch = inputs["input_ids"].shape[0]
            assert len(report.vision_tokens) == batch and len(report.decisions) == batch  # replaced, not appended
            assert set(vars(handle._local)) <= {"call", "step", "report", "recorded", "labels", "generation"}
            assert not handle._local.recorded and handle._local.generation is None
            state = _tensors(vars(handle._local))
            # no (L x L) mask or per-layer copies kept after the call: O(batch x length) elements
            assert sum(t.numel() for t in state) <= 16 * inputs["input_ids"].numel()
            if i % 6 == 0:
                sizes.append(sum(t.numel() * t.element_size() for t in state))
                gc.collect()
                rss.append(_rss_bytes())
        assert len(set(sizes)) == 1, sizes  # the same call leaves the same state behind
        # after a warm-up (the first two rounds), resident memory stays flat within allocator noise
        print("rss MiB", [round(r / 2**20, 1) for r in rss], "state bytes", sizes)
        assert max(rss[2:]) - rss[1] < 24 * 2**20, [r // 2**20 for r in rss]
    assert sum(len(m._forward_pre_hooks) for m in model.modules()) == hooks_before
    for cost in (0.2, 0.5, 1.0):  # apply / remove cycles leave nothing behind
        with framefusion.apply(model, FrameFusionConfig(cost=cost)):
            greedy(model, largest, n=1)
        assert sum(len(m._forward_pre_hooks) for m in model.modules()) == hooks_before
        assert not hasattr(model, "_framefusion_handle")
