"""Steady labels on video: per-stream hysteresis and N-of-M voting over a model's scores.

A score that hovers near its threshold makes per-frame labels blink (DeepStream users see secondary
classifier labels do this). Two filters, per class, per stream id, applied in this order:

- hysteresis: a label goes on when its score reaches the card's threshold for that class and goes off
  only when the score falls below a lower off threshold, `hysteresis` below it in log-odds
  (logit(off) = logit(on) - hysteresis; at threshold 0.5, 0.4 puts the off threshold at 0.40). A margin
  in log-odds keeps its meaning at thresholds near 0 or 1, where tuned thresholds often lie and a margin
  in score units would leave no room below the threshold, and jitter moves a sigmoid's input, the logit;
- voting `(n, m)`: the label shown is on while at least `n` of the stream's last `m` hysteresis
  decisions are on. A new stream counts the frames it has, so its first label needs `n` frames.

A true change therefore shows after at most `n - 1` frames (going on) or `m - n` frames (going off)
once the score has crossed the threshold (or the off threshold). `hysteresis=0, votes=(1, 1)` gives
exactly the Predictor's per-frame labels. The settings come from the arguments, else the card's
`stream_smoothing`, else the defaults measured on jittered real photos (3 of 5 votes, no hysteresis:
benchmarks/stream_smoothing.py, README "Stream smoothing").

State is a few bytes per class per stream, kept for at most `max_streams` streams (the one updated
longest ago is forgotten first); `forget` drops a stream whose camera went away. One lock guards it,
so capture threads of several cameras can share one smoother.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Sequence

import numpy as np

from edgemlic import checks
from edgemlic.card import ModelCard, StreamSmoothing
from edgemlic.errors import EdgemlicError

DEFAULT_MAX_STREAMS = 1024


def off_thresholds(on: np.ndarray, hysteresis: float) -> np.ndarray:
    """The thresholds `hysteresis` log-odds below `on`, as float32 like the card's thresholds."""
    if hysteresis == 0:
        return on.copy()  # exactly the on thresholds: the Predictor's labels, not one rounding off
    logit = np.log(on.astype(np.float64)) - np.log1p(-on.astype(np.float64))
    return (1 / (1 + np.exp(hysteresis - logit))).astype(np.float32)


class _Stream:
    """One stream's memory: the hysteresis state and a ring of its last m decisions."""

    def __init__(self, num_classes: int, window: int) -> None:
        self.on = np.zeros(num_classes, dtype=bool)
        self.recent = np.zeros((window, num_classes), dtype=bool)
        self.next_slot = 0


class StreamSmoother:
    """Per-stream smoothed labels from per-frame scores in the card's class order."""

    def __init__(
        self,
        card: ModelCard,
        *,
        threshold: float | None = None,
        hysteresis: float | None = None,
        votes: tuple[int, int] | None = None,
        max_streams: int = DEFAULT_MAX_STREAMS,
    ) -> None:
        """`threshold` overrides the card's thresholds for every class, as in the Predictor; `hysteresis`
        and `votes` override the card's `stream_smoothing`, else StreamSmoothing's measured defaults."""
        self.classes = card.classes
        self.on_thresholds = card.thresholds(threshold)
        defaults = card.stream_smoothing or StreamSmoothing()
        settings = StreamSmoothing(  # checks both, one way for the card and the API
            defaults.hysteresis if hysteresis is None else hysteresis,
            defaults.votes if votes is None else votes,
        )
        self.off_thresholds = off_thresholds(self.on_thresholds, settings.hysteresis)
        self.needed, self.window = settings.votes
        checks.at_least("max_streams", max_streams, 1)
        self.max_streams = max_streams
        self._streams: OrderedDict[Hashable, _Stream] = OrderedDict()
        self._lock = threading.Lock()

    def update(self, stream_id: Hashable, scores: np.ndarray) -> list[str]:
        """The labels to show for one new frame of `stream_id` (`scores`: one row, or 1 x classes)."""
        row = np.asarray(scores)
        if row.ndim == 2 and row.shape[0] == 1:
            row = row[0]
        if row.ndim != 1:
            raise EdgemlicError(
                f"scores of shape {row.shape} for one stream; give one row, or call update_many "
                "with one stream id per row"
            )
        return self._labels(self.decide([stream_id], row[None])[0])

    def update_many(self, stream_ids: Sequence[Hashable], scores: np.ndarray) -> list[list[str]]:
        """Labels for one new frame of each stream: row i of `scores` (N x classes) is `stream_ids[i]`'s."""
        return [self._labels(row) for row in self.decide(stream_ids, scores)]

    def decide(self, stream_ids: Sequence[Hashable], scores: np.ndarray) -> np.ndarray:
        """`update_many` as a boolean N x classes array (for code that works with masks)."""
        scores = np.asarray(scores, dtype=np.float32)
        if scores.ndim != 2 or scores.shape[1] != len(self.classes):
            raise EdgemlicError(
                f"scores of shape {scores.shape}: expected N x {len(self.classes)} (the card's classes)"
            )
        if len(stream_ids) != len(scores):
            raise EdgemlicError(
                f"{len(stream_ids)} stream ids for {len(scores)} rows of scores; give one id per row"
            )
        if len(set(stream_ids)) != len(stream_ids):
            raise EdgemlicError(
                "a stream id repeats in one update; give each stream's frames in order, one per call"
            )
        shown = np.empty(scores.shape, dtype=bool)
        with self._lock:
            for i, (stream_id, row) in enumerate(zip(stream_ids, scores, strict=True)):
                stream = self._stream(stream_id)
                # NaN compares false on both sides, so a NaN score leaves the state as it was.
                stream.on = np.where(stream.on, ~(row < self.off_thresholds), row >= self.on_thresholds)
                stream.recent[stream.next_slot] = stream.on
                stream.next_slot = (stream.next_slot + 1) % self.window
                shown[i] = stream.recent.sum(axis=0) >= self.needed
        return shown

    def forget(self, stream_id: Hashable) -> None:
        """Drop a stream's memory (its camera went away or cut to another scene); unknown ids are fine."""
        with self._lock:
            self._streams.pop(stream_id, None)

    def reset(self) -> None:
        """Forget every stream."""
        with self._lock:
            self._streams.clear()

    @property
    def stream_count(self) -> int:
        with self._lock:
            return len(self._streams)

    def _stream(self, stream_id: Hashable) -> _Stream:
        """The stream's state, made when new; the stream updated longest ago goes when over the bound."""
        stream = self._streams.get(stream_id)
        if stream is None:
            if len(self._streams) >= self.max_streams:
                self._streams.popitem(last=False)
            stream = self._streams[stream_id] = _Stream(len(self.classes), self.window)
        else:
            self._streams.move_to_end(stream_id)
        return stream

    def _labels(self, shown: np.ndarray) -> list[str]:
        return [c for c, on in zip(self.classes, shown, strict=True) if on]
