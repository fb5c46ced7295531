"""Synthetic video QA v2 (issue 18): seeded, split-disjoint, balanced, answers readable from the pixels,
>= 512 video tokens a prompt, camera motion that changes what a token position shows, sensor noise."""

import hashlib
import importlib.util
import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from framefusion.data import synthetic_qa as v1
from framefusion.data import synthetic_qa_v2 as qa


@lru_cache(maxsize=None)
def drawn(split: str, index: int, **kwargs):
    return qa.sample_and_scene(split, index, **dict(kwargs))


def _digest(video: np.ndarray) -> str:
    return hashlib.sha1(video.tobytes()).hexdigest()


# ------------------------------------------------------------------------- the independent checker
# It reads colours from the frames only; from the scene it takes where to look (screen centres and
# radii), never what is there.


def _disc_colour(frame: np.ndarray, centre, radius: float, lamp: bool = False, tolerance: float = 45.0) -> str | None:
    """Palette name of the mean colour of the inner half of a disc, or None (background); ``lamp``:
    the unlit lamp's dark grey counts too (elsewhere it could be confused with a dark background)."""
    cy, cx = centre
    r = max(1.5, 0.5 * radius)
    yy, xx = np.mgrid[0 : frame.shape[0], 0 : frame.shape[1]]
    inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    mean = frame[inside].astype(float).mean(0)
    palette = {**qa.COLOURS, "off": qa.LAMP_OFF} if lamp else qa.COLOURS
    name, dist = min(((n, np.linalg.norm(mean - c)) for n, c in palette.items()), key=lambda x: x[1])
    return name if dist < tolerance else None


def _runs(flags: list[bool]) -> list[tuple[int, int]]:
    out, start = [], None
    for f, on in enumerate([*flags, False]):
        if on and start is None:
            start = f
        elif not on and start is not None:
            out.append((start, f))
            start = None
    return out


def _form_from_pixels(frame: np.ndarray, centre, radius: float, colour: str) -> str:
    """circle / square / triangle from how much of its bounding box the object's colour fills."""
    cy, cx = centre
    r = int(np.ceil(radius * 1.3)) + 2
    y0, x0 = max(0, int(cy) - r), max(0, int(cx) - r)
    win = frame[y0 : int(cy) + r + 1, x0 : int(cx) + r + 1].astype(float)
    mask = np.linalg.norm(win - np.array(qa.COLOURS[colour], float), axis=-1) < 45
    ys, xs = np.nonzero(mask)
    fill = mask.sum() / ((ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1))
    return "square" if fill > 0.9 else "triangle" if fill < 0.65 else "circle"


def answer_from_frames(sample: qa.QASample, scene: dict) -> str:
    video = sample.video
    lamp, dot, *shapes = scene["objects"]
    per_frame = lambda obj: [_disc_colour(video[f], obj["centre"][f], obj["radius"][f], obj is lamp)  # noqa: E731
                             for f in range(len(video))]  # fmt: skip
    if sample.kind in ("flash_colour", "count"):
        seen = per_frame(lamp)
        assert None not in seen, "the lamp is always on screen, lit or not"
        flashes = _runs([c != "off" for c in seen])
        colours = {seen[f] for s, e in flashes for f in range(s, e)}
        assert len(colours) == 1, "all flashes of a clip have one colour"
        if sample.kind == "flash_colour":
            assert len(flashes) == 1 and 1 <= flashes[0][1] - flashes[0][0] <= 2, "one brief flash (1-2 frames)"
            return colours.pop()
        assert all(e - s == 2 for s, e in flashes)
        return qa.COUNTS[len(flashes) - 1]
    if sample.kind == "dot":
        seen = set(per_frame(dot))
        assert len(seen) == 1 and None not in seen, "the dot is on screen, one colour, in every frame"
        return seen.pop()
    if sample.kind == "turns_into":
        changed = []
        for obj in shapes:
            seq = [c for c in per_frame(obj) if c is not None]
            if len(set(seq)) == 2:
                assert seq == sorted(seq, key=seq.index), "one change, no change back"
                changed.append(seq[-1])
        assert len(changed) == 1, "exactly one shape changes colour"
        return changed[0]
    # order: the frame where each shape is first seen, and the earlier one's form read from its pixels
    firsts = []
    for obj in shapes:
        seq = per_frame(obj)
        f = next(i for i, c in enumerate(seq) if c is not None)
        firsts.append((f, _form_from_pixels(video[f], obj["centre"][f], obj["radius"][f], seq[f])))
    assert firsts[0][0] != firsts[1][0], "the two shapes appear at different frames"
    return min(firsts)[1]


# ----------------------------------------------------------------------------------------- tests


def test_same_seed_same_sample_and_different_indices_differ():
    a, b = qa.make_sample("train", 7), qa.make_sample("train", 7)
    assert np.array_equal(a.video, b.video) and a.as_record() == b.as_record()
    assert a.video.shape == (qa.NUM_FRAMES, qa.SIZE, qa.SIZE, 3) and a.video.dtype == np.uint8
    assert not np.array_equal(a.video, qa.make_sample("train", 8).video)
    assert a.as_record() == {"question": a.question, "answer": a.answer, "kind": a.kind,
                             "seed": (qa.SPLIT_SEEDS["train"], 7), "motion": a.motion, "camera": a.camera}  # fmt: skip


def test_splits_never_share_a_clip():
    assert len(set(qa.SPLIT_SEEDS.values())) == len(qa.SPLIT_SEEDS)
    assert not set(qa.SPLIT_SEEDS.values()) & set(v1.SPLIT_SEEDS.values()), "v2 seeds differ from v1's"
    digests = {split: {_digest(qa.make_sample(split, i).video) for i in range(5)} for split in qa.SPLIT_SEEDS}
    assert all(len(d) == 5 for d in digests.values())
    splits = list(digests)
    for i, s in enumerate(splits):
        for t in splits[i + 1 :]:
            assert not digests[s] & digests[t], (s, t)


def test_kinds_and_answers_balanced_by_construction():
    # sample i asks KINDS[i % 5] with answer ANSWERS[kind][(i // 5) % n]: check on 300 indices without rendering
    samples = qa.make_split("test", 10)
    assert [s.kind for s in samples] == list(qa.KINDS) * 2
    for s in samples:
        assert s.question == qa.QUESTIONS[s.kind] and s.answer in qa.ANSWERS[s.kind]
    assert len(qa.KINDS) == 5 and set(qa.QUESTIONS) == set(qa.ANSWERS) == set(qa.KINDS)
    planned = [qa.planned_question(i) for i in range(300)]
    for kind in qa.KINDS:
        answers = [a for k, a in planned if k == kind]
        assert len(answers) == 60
        counts = {a: answers.count(a) for a in qa.ANSWERS[kind]}
        assert set(counts.values()) == {60 // len(qa.ANSWERS[kind])}, (kind, counts)
    assert [(s.kind, s.answer) for s in samples] == planned[:10]


def test_every_answer_word_is_one_token():
    tokenizer = qa.build_qa_tokenizer()
    for answers in qa.ANSWERS.values():
        for word in answers:
            assert len(tokenizer(word)["input_ids"]) == 1, word


def test_motion_share_is_controllable_and_recorded():
    flags = [qa.camera_of("train", i)["motion"] for i in range(400)]
    assert 0.4 < np.mean(flags) < 0.6
    assert not any(qa.camera_of("train", i, motion_share=0.0)["motion"] for i in range(50))
    assert all(qa.camera_of("train", i, motion_share=1.0)["motion"] for i in range(50))
    cams = {qa.camera_of("train", i, motion_share=1.0)["camera"] for i in range(50)}
    assert cams == {"pan", "zoom", "pan+zoom"}
    # the scene does not depend on the camera: same index, same content, only the view differs
    still = qa.make_sample("train", 3, motion_share=0.0, noise=0)
    moving = qa.make_sample("train", 3, motion_share=1.0, noise=0)
    assert (still.kind, still.answer, still.motion, moving.motion) == (moving.kind, moving.answer, False, True)


@pytest.mark.parametrize("index", range(30))
def test_the_answer_is_in_the_frames(index):
    sample, scene = drawn("validation", index)
    assert answer_from_frames(sample, scene) == sample.answer, (sample.kind, sample.camera)


@pytest.mark.parametrize("index", range(10))
def test_without_distractors_only_the_asked_object_is_drawn_and_the_answer_stays(index):
    sample, scene = drawn("validation", index, distractors=False)
    full, _ = drawn("validation", index)
    assert (sample.question, sample.answer, sample.kind, sample.motion) == (full.question, full.answer, full.kind,
                                                                            full.motion)  # fmt: skip
    assert answer_from_frames(sample, scene) == sample.answer, (sample.kind, sample.camera)
    asked = {"flash_colour": ["lamp"], "count": ["lamp"], "dot": ["dot"], "order": ["shape", "shape"],
             "turns_into": ["shape"]}[sample.kind]  # fmt: skip
    shown = [obj["role"] for obj in scene["objects"] if any(c is not None for c in obj["colours"])]
    assert shown == asked
    # an object left out is not in the pixels: where the full clip shows it, this one shows background
    for obj in scene["objects"]:
        if all(c is None for c in obj["colours"]):
            f = len(sample.video) // 2
            assert _disc_colour(sample.video[f], obj["centre"][f], obj["radius"][f], lamp=True) is None


def test_checker_covers_each_kind_with_and_without_camera_motion():
    seen = {(drawn("validation", i)[0].kind, drawn("validation", i)[0].motion) for i in range(20)}
    assert {k for k, _ in seen} == set(qa.KINDS) and {m for _, m in seen} == {True, False}


def test_a_prompt_carries_at_least_512_video_tokens_and_patchify_matches_the_processor():
    processor = qa.build_qa_processor()
    sample = qa.make_sample("test", 0)
    out = processor(text=[qa.chat_text(processor, sample.question)], videos=[sample.video], return_tensors="np")
    video_id = processor.tokenizer.convert_tokens_to_ids("<|video_pad|>")
    n = int((out["input_ids"][0] == video_id).sum())
    assert n == 16 * 6 * 6 == 576 >= 512
    patches, grid = qa.patchify(sample.video, processor)
    assert grid == tuple(out["video_grid_thw"][0]) == (16, 12, 12)
    assert np.allclose(patches, out["pixel_values_videos"], atol=1e-5)
    targets = qa.token_targets(drawn("test", 0)[1], qa.NUM_FRAMES, qa.SIZE)
    assert set(targets) == set(qa.TOKEN_TARGET_SIZES) and all(len(t) == n for t in targets.values())
    assert set(np.unique(targets["role"])) <= set(range(len(qa.ROLES))) and {1, 2} <= set(targets["role"])


def _adjacent_difference(video: np.ndarray) -> float:
    return float(np.abs(np.diff(video.astype(np.int16), axis=0)).mean())


def test_camera_motion_changes_what_a_position_shows_more_than_a_still_camera():
    still = [_adjacent_difference(qa.make_sample("validation", i, motion_share=0.0, noise=0).video) for i in range(4)]
    moving = [_adjacent_difference(qa.make_sample("validation", i, motion_share=1.0, noise=0).video) for i in range(4)]
    assert max(still) < 2 and min(moving) > 3 * max(still), (still, moving)
    noisy_still = [
        _adjacent_difference(drawn("validation", i)[0].video) for i in range(20) if not drawn("validation", i)[0].motion
    ]
    noisy_moving = [
        _adjacent_difference(drawn("validation", i)[0].video) for i in range(20) if drawn("validation", i)[0].motion
    ]
    assert min(noisy_moving) > max(noisy_still), (noisy_still, noisy_moving)


def test_sensor_noise_makes_every_frame_distinct():
    clean = qa.make_sample("validation", 0, motion_share=0.0, noise=0).video
    noisy = qa.make_sample("validation", 0, motion_share=0.0).video
    assert any(np.array_equal(clean[f], clean[f + 1]) for f in range(len(clean) - 1)), (
        "without noise some frames repeat"
    )
    assert len({_digest(frame) for frame in noisy}) == len(noisy)
    residual = noisy.astype(float) - clean
    assert 4 < residual.std() < 8  # about the default 6 (clipped at 0 and 255)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="split"):
        qa.make_sample("dev", 0)
    with pytest.raises(ValueError, match="kind"):
        qa.make_sample("train", 0, kind="colour")
    with pytest.raises(ValueError, match="num_frames"):
        qa.make_sample("train", 0, num_frames=16)
    with pytest.raises(ValueError, match="size"):
        qa.make_sample("train", 0, size=150)
    fixed = qa.make_sample("train", 0, kind="count")
    assert fixed.kind == "count" and fixed.answer in qa.COUNTS


def test_training_script_runs_on_v2(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "train_synthetic", Path(__file__).resolve().parents[1] / "scripts" / "train_synthetic.py"
    )
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    out = tmp_path / "model"
    args = ["--data", "v2", "--out", str(out), "--vision-steps", "2", "--steps", "2", "--warmup", "1", "--batch", "2",
            "--val", "5", "--eval-every", "2", "--hidden", "32", "--intermediate", "64", "--layers", "2", "--heads", "2",
            "--vision-dim", "32", "--frames", "24", "--train-frames", "24", "--size", "112", "--threads", "1"]  # fmt: skip
    result = train.main(args)
    assert result["steps"] == 2 and 0.0 <= result["best_validation_accuracy"] <= 1.0
    info = json.loads((out / "training.json").read_text())
    assert info["data"] == "v2" and info["frames"] == 24 and info["train_frames"] == [24] and info["size"] == 112
    assert info["batch"] == 2 and info["val"] == 5  # given; the rest from V2_DEFAULTS
    assert info["minutes"] == train.V2_DEFAULTS["minutes"]
    stages = [entry.get("stage", "qa") for entry in info["log"]]
    assert stages == ["vision", "qa"]
    assert set(qa.KINDS) <= set(info["log"][-1]) and {"motion", "still"} & set(info["log"][-1])


def test_eval_takes_the_test_split_the_model_was_trained_on(tmp_path):
    """A model folder whose training.json says v2 is evaluated on v2's test split (with the camera
    flag of every question); v1 stays the default; an unknown data set is named in the error."""
    import json

    import pytest

    from framefusion.data import synthetic_qa, synthetic_qa_v2
    from framefusion.tools.evaluate import synthetic_test_set

    (tmp_path / "training.json").write_text(json.dumps({"data": "v2", "frames": 24, "size": 112}))
    items = synthetic_test_set(5, model_path=tmp_path)
    want = synthetic_qa_v2.make_split("test", 5, num_frames=24, size=112)
    assert [(i.question, i.answer, i.kind, i.motion) for i in items] == [(s.question, s.answer, s.kind, s.motion) for s in want]
    assert all(np.array_equal(i.frames(), s.video) for i, s in zip(items, want))  # rendered when asked for
    assert items[0].frames().shape == (24, 112, 112, 3) and all(i.motion is not None for i in items)
    (tmp_path / "training.json").write_text(json.dumps({"frames": 8, "size": 112}))
    items = synthetic_test_set(3, model_path=tmp_path)
    assert [i.question for i in items] == [s.question for s in synthetic_qa.make_split("test", 3, num_frames=8, size=112)]
    assert all(i.motion is None for i in items)
    (tmp_path / "training.json").write_text(json.dumps({"data": "v3"}))
    with pytest.raises(ValueError, match="names data 'v3'; known: 'v1', 'v2'"):
        synthetic_test_set(3, model_path=tmp_path)


def test_eval_holds_one_batch_of_v2_videos_at_a_time(tmp_path):
    """A v2 test set is made without rendering its videos, and eval renders them batch by batch: the
    peak of numpy/torch memory allocated stays near one batch's videos, not the set's (measured)."""
    import tracemalloc

    from framefusion.tools import evaluate as ev
    from framefusion.tools.answer import load_video_model
    from framefusion.tools.loading import SHIPPED_MODEL, ModelOptions

    loaded = load_video_model(SHIPPED_MODEL, ModelOptions(device="cpu"))
    (tmp_path / "training.json").write_text(json.dumps({"data": "v2", "frames": 24, "size": 112}))
    count, batch = 24, 4
    video_bytes = 24 * 112 * 112 * 3
    tracemalloc.start()
    try:
        items = ev.synthetic_test_set(count, model_path=tmp_path)
        made = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        rows = ev.evaluate(loaded.model, loaded.processor, items, [], batch_size=batch, progress=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert rows[0]["total"] == count
    assert made < video_bytes  # not one video rendered to make the set
    # one batch: its uint8 videos, the processor's float32 patches (4 bytes a value: about 4 videos'
    # worth of uint8 each) and the activations, measured 13.9 MB; all 24 uint8 videos alone are 21.7 MB
    assert peak < count * video_bytes, (peak, count * video_bytes)
