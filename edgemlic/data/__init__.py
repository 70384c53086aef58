"""Datasets: COCO-format splits as multilabel samples, the generated shapes set, statistics and checks.

Nothing here imports torch; the torch `Dataset` wrapper lives with the training code.
"""

from edgemlic.data.coco import DEFAULT_CATEGORIES, CocoSplit, Sample, load_coco_split, parse_categories
from edgemlic.data.stats import CheckReport, check_split, save_stats_chart, split_stats
from edgemlic.data.synth import generate_shapes_dataset

__all__ = [
    "DEFAULT_CATEGORIES",
    "CheckReport",
    "CocoSplit",
    "Sample",
    "check_split",
    "generate_shapes_dataset",
    "load_coco_split",
    "parse_categories",
    "save_stats_chart",
    "split_stats",
]
