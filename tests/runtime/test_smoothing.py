import io
import threading

import numpy as np
import pytest
from PIL import Image

from edgemlic.card import ModelCard, StreamSmoothing
from edgemlic.errors import EdgemlicError
from edgemlic.export.pipeline import export_model
from edgemlic.runtime import Predictor, StreamSmoother
from edgemlic.runtime.smoothing import off_thresholds

CARD = ModelCard(classes=("cat", "dog"), architecture="resnet_tiny", class_thresholds=(0.5, 0.3))


def run(smoother: StreamSmoother, cat_scores, dog=0.0, stream="cam0") -> list[bool]:
    """Feed one stream a sequence of 'cat' scores; returns whether 'cat' was shown at each frame."""
    return ["cat" in smoother.update(stream, np.array([s, dog], np.float32)) for s in cat_scores]


def toggles(shown: list[bool]) -> int:
    return sum(a != b for a, b in zip(shown, shown[1:], strict=False))


HOVER = [0.52, 0.47, 0.53, 0.46, 0.51, 0.48, 0.55, 0.45, 0.5, 0.49] * 3
"""A score that hovers around cat's threshold 0.5 after a first crossing, never below 0.45."""


def test_without_smoothing_labels_equal_the_predictors():
    smoother = StreamSmoother(CARD, hysteresis=0.0, votes=(1, 1))
    scores = np.array([[0.5, 0.29], [0.49, 0.3], [0.9, 0.0]], np.float32)
    shown = [smoother.update("cam", row) for row in scores]
    assert shown == [["cat"], ["dog"], ["cat"]]
    assert toggles(run(StreamSmoother(CARD, hysteresis=0.0, votes=(1, 1)), HOVER)) > 20


def test_hysteresis_keeps_a_hovering_label_on_and_lets_a_true_drop_through():
    smoother = StreamSmoother(CARD, hysteresis=0.4, votes=(1, 1))  # off below 0.401
    shown = run(smoother, [0.3, 0.45, *HOVER, 0.39, 0.44, 0.49, 0.5])
    assert shown[:2] == [False, False]  # 0.45 is above the off threshold but the label was never on
    assert all(shown[2:-4])
    assert shown[-4:] == [False, False, False, True]  # off below 0.4 at once; on again only at 0.5


def test_votes_hide_single_frame_glitches_and_follow_a_change_within_the_stated_delay():
    n, m = 3, 5
    smoother = StreamSmoother(CARD, hysteresis=0.0, votes=(n, m))
    glitches = [0.1, 0.9, 0.1, 0.1, 0.9, 0.1, 0.1] + [0.1] * m  # the window is clear again at the end
    assert not any(run(smoother, glitches))
    shown = run(smoother, [0.9] * 8 + [0.1] * 8)
    assert shown.index(True) == n - 1  # on after n frames above the threshold
    assert shown[8:].index(False) == m - n  # off after m - n + 1 frames below it
    assert toggles(shown) == 2


def test_hysteresis_and_votes_together_remove_the_flicker_of_a_hovering_score():
    smoother = StreamSmoother(CARD, hysteresis=0.4, votes=(2, 3))
    shown = run(smoother, HOVER)
    assert shown[:1] == [False] and all(shown[1:])


def test_streams_do_not_affect_each_other_and_forget_and_reset_start_them_afresh():
    smoother = StreamSmoother(CARD, hysteresis=0.4, votes=(2, 3))
    ids = ["front", "back"]
    first = smoother.update_many(ids, np.array([[0.9, 0.0], [0.0, 0.9]]))
    second = smoother.update_many(ids, np.array([[0.9, 0.0], [0.0, 0.9]]))
    assert first == [[], []] and second == [["cat"], ["dog"]]
    assert smoother.update("front", [0.45, 0.0]) == ["cat"]
    smoother.forget("front")
    assert smoother.update("front", [0.9, 0.0]) == [] and smoother.update("back", [0.0, 0.9]) == ["dog"]
    smoother.reset()
    assert smoother.stream_count == 0 and smoother.update("back", [0.0, 0.9]) == []


def test_memory_is_bounded_by_forgetting_the_stream_updated_longest_ago():
    smoother = StreamSmoother(CARD, hysteresis=0.0, votes=(2, 2), max_streams=2)
    for stream in ("a", "b", "a"):
        smoother.update(stream, [0.9, 0.0])
    smoother.update("c", [0.9, 0.0])  # "b" was updated longest ago and goes
    assert smoother.stream_count == 2
    assert smoother.update("a", [0.9, 0.0]) == ["cat"] and smoother.update("b", [0.9, 0.0]) == []


def test_threads_updating_their_own_streams_see_only_their_own_frames():
    smoother = StreamSmoother(CARD, hysteresis=0.0, votes=(3, 3))
    results: dict[int, list[list[str]]] = {}

    def camera(index: int) -> None:
        row = np.array([0.9, 0.0] if index % 2 else [0.0, 0.9], np.float32)
        results[index] = [smoother.update(index, row) for _ in range(200)]

    threads = [threading.Thread(target=camera, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for index, shown in results.items():
        expected = ["cat"] if index % 2 else ["dog"]
        assert shown[:2] == [[], []] and all(labels == expected for labels in shown[2:])


def test_the_off_threshold_lies_the_margin_below_in_log_odds_even_near_0_and_1():
    on = np.array([0.5, 1e-5, 0.999], np.float32)
    off = off_thresholds(on, 0.4)
    assert off[0] == pytest.approx(0.4013, abs=1e-4)
    np.testing.assert_allclose(np.log(off / (1 - off)), np.log(on / (1 - on)) - 0.4, atol=1e-3)
    assert np.array_equal(off_thresholds(on, 0.0), on)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(hysteresis=float("nan")), "--hysteresis nan"),
        (dict(hysteresis=-0.1), "--hysteresis -0.1"),
        (dict(votes=(4, 3)), "n must be from 1 to m"),
        (dict(votes=(2,)), "give two whole numbers"),
        (dict(votes=3), "give two whole numbers"),
        (dict(max_streams=0), "--max-streams 0"),
    ],
)
def test_settings_that_cannot_work_are_one_clear_error(options, message):
    with pytest.raises(EdgemlicError, match=message):
        StreamSmoother(CARD, **options)


def test_smoothing_defaults_travel_in_the_card_and_arguments_override_them(tmp_path):
    card = CARD.replace(stream_smoothing=StreamSmoothing(hysteresis=0.4, votes=(2, 4)))
    card.save(tmp_path / "card.json")
    loaded = ModelCard.load(tmp_path / "card.json")
    assert loaded == card
    from_card = StreamSmoother(loaded)
    assert (from_card.needed, from_card.window) == (2, 4)
    assert from_card.off_thresholds[0] == pytest.approx(0.4013, abs=1e-4)
    overridden = StreamSmoother(loaded, hysteresis=0, votes=[1, 1])
    assert (overridden.needed, overridden.window) == (1, 1)
    assert np.array_equal(overridden.off_thresholds, overridden.on_thresholds)
    default = StreamSmoother(CARD)
    assert (default.needed, default.window) == StreamSmoothing().votes


def test_a_card_without_smoothing_is_written_as_before_and_one_with_bad_smoothing_is_refused(tmp_path):
    assert "stream_smoothing" not in CARD.to_dict()
    assert ModelCard.from_dict(CARD.to_dict()) == CARD
    data = CARD.to_dict() | {"stream_smoothing": {"hysteresis": 0.5, "votes": [4, 3]}}
    with pytest.raises(EdgemlicError, match="n must be from 1 to m"):
        ModelCard.from_dict(data)
    with pytest.raises(EdgemlicError, match="malformed model card"):
        ModelCard.from_dict(CARD.to_dict() | {"stream_smoothing": {"votes": [2, 3]}})


def test_scores_of_the_wrong_shape_or_a_repeated_stream_are_refused():
    smoother = StreamSmoother(CARD)
    with pytest.raises(EdgemlicError, match="expected N x 2"):
        smoother.update("cam", [0.1, 0.2, 0.3])
    with pytest.raises(EdgemlicError, match="call update_many"):
        smoother.update("cam", np.zeros((2, 2)))
    with pytest.raises(EdgemlicError, match="stream id repeats"):
        smoother.update_many(["cam", "cam"], np.zeros((2, 2)))
    with pytest.raises(EdgemlicError, match="one id per row"):
        smoother.update_many(["cam"], np.zeros((2, 2)))


def jittered_frames(path, count: int, seed: int) -> list[bytes]:
    """JPEG frames of one picture, each shifted a few pixels, relit and re-encoded at its own quality."""
    rng = np.random.default_rng(seed)
    image = np.asarray(Image.open(path).convert("RGB"), np.float32)
    frames = []
    for _ in range(count):
        dx, dy = rng.integers(0, 5, size=2)
        shifted = image[dy : dy + image.shape[0] - 4, dx : dx + image.shape[1] - 4] * rng.uniform(0.85, 1.15)
        buffer = io.BytesIO()
        Image.fromarray(np.clip(shifted, 0, 255).astype(np.uint8)).save(
            buffer, "JPEG", quality=int(rng.integers(40, 95))
        )
        frames.append(buffer.getvalue())
    return frames


def test_smoothing_removes_flicker_on_jittered_jpeg_frames_through_onnx_runtime(
    tiny_checkpoint, val_images, tmp_path
):
    model = export_model(tiny_checkpoint, tmp_path, "fp32").path
    frames = [f for i, path in enumerate(val_images[:4]) for f in jittered_frames(path, 24, seed=i)]
    with Predictor(model, device="cpu") as predictor:
        assert predictor.backend.name == "onnxruntime"
        scores = predictor.scores(frames)
    # each class's threshold at its median score over the frames, where flicker comes from
    medians = np.clip(np.median(scores, axis=0), 1e-6, 1 - 1e-6)
    card = predictor.card.replace(class_thresholds=tuple(float(t) for t in medians))
    toggles = {}
    for name, smoother in (
        ("plain", StreamSmoother(card, hysteresis=0, votes=(1, 1))),
        ("smooth", StreamSmoother(card)),
    ):
        shown = np.stack([smoother.decide(["cam"], row[None])[0] for row in scores])
        toggles[name] = int((shown[1:] != shown[:-1]).sum())
    assert toggles["plain"] > 10 and toggles["smooth"] < toggles["plain"] / 2, toggles
