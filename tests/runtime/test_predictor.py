"""The predictor: images in, the card's labels out, from any artifact or an open backend."""

import numpy as np
import torch

from edgemlic.checkpoint import load_model
from edgemlic.images import decode_image, preprocess
from edgemlic.runtime import OpenVinoOptions, Predictor, load_backend


def test_no_images_give_no_predictions(exported):
    with Predictor(exported["fp32"], device="cpu") as predictor:
        assert predictor.predict([]) == []
        assert predictor.scores([]).shape == (0, predictor.card.num_classes)


def test_predictor_matches_a_direct_forward_pass(tiny_checkpoint, val_images):
    model, card = load_model(tiny_checkpoint)
    x = torch.from_numpy(np.stack([preprocess(p, card.preprocessing) for p in val_images]))
    with torch.no_grad():
        expected = torch.sigmoid(model(x)).numpy()
    with Predictor(tiny_checkpoint, device="cpu") as predictor:
        np.testing.assert_allclose(predictor.scores(val_images, batch_size=3), expected, atol=1e-5)


def test_paths_and_arrays_give_the_same_predictions(tiny_checkpoint, val_images):
    arrays = [np.asarray(decode_image(p)) for p in val_images[:4]]
    with Predictor(tiny_checkpoint, device="cpu") as predictor:
        from_files = predictor.predict(val_images[:4])
        from_arrays = predictor.predict(arrays)
    assert [p.scores for p in from_files] == [p.scores for p in from_arrays]
    assert from_arrays[0].source == "array[0]" and from_files[0].source == str(val_images[0])


def test_labels_follow_the_threshold(tiny_checkpoint, val_images):
    labels = {}
    for threshold in (0.2, 0.8):
        with Predictor(tiny_checkpoint, threshold=threshold, device="cpu") as predictor:
            predictions = predictor.predict(val_images)
        for p in predictions:
            assert p.labels == [c for c, s in p.scores.items() if s >= threshold]
        labels[threshold] = [set(p.labels) for p in predictions]
    assert all(high <= low for low, high in zip(labels[0.2], labels[0.8], strict=True))
    assert sum(map(len, labels[0.2])) > sum(map(len, labels[0.8]))


def test_threads_and_options_reach_the_backend(exported, val_images):
    options = OpenVinoOptions(hint="throughput")
    with Predictor(exported["fp32"], device="cpu", threads=1, options=options) as predictor:
        backend = predictor.backend
        assert (backend.name, backend.options, backend.cpu_threads) == ("openvino", options, 1)
        scores = predictor.scores(val_images[:3])
    with load_backend(exported["fp32"], "cpu") as onnxruntime, Predictor(onnxruntime) as given:
        assert given.backend is onnxruntime  # an open backend is used as it is
        np.testing.assert_allclose(given.scores(val_images[:3]), scores, atol=1e-5)
