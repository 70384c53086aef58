"""Training on N local processes through torch's elastic launcher (what torchrun uses); one trains here."""

from __future__ import annotations

import os
from pathlib import Path

from edgemlic import checks
from edgemlic.errors import EdgemlicError, first_line
from edgemlic.train.config import TrainConfig
from edgemlic.train.distributed import World, per_rank_batch
from edgemlic.train.loop import TrainResult, resume, train


def train_on_processes(config: TrainConfig, nproc: int) -> TrainResult:
    checks.at_least("nproc", nproc, 1)
    if nproc == 1:
        return train(config)
    per_rank_batch(config.batch_size, World(size=nproc))  # fail before any process starts
    return _launch(nproc, config.to_dict(), None)


def resume_on_processes(run_dir: str | Path, nproc: int) -> TrainResult:
    checks.at_least("nproc", nproc, 1)
    if nproc == 1:
        return resume(run_dir)
    return _launch(nproc, None, str(run_dir))


def _launch(nproc: int, config: dict | None, run_dir: str | None) -> TrainResult:
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    launch = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=f"edgemlic-{os.getpid()}",
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
        monitor_interval=0.5,
    )
    try:
        results = elastic_launch(launch, _worker)(config, run_dir)
    except Exception as e:  # ChildFailedError carries each rank's traceback; the first line says what failed
        raise EdgemlicError(f"distributed training failed: {first_line(e)}") from None
    return results[0]


def _worker(config: dict | None, run_dir: str | None) -> TrainResult:
    if run_dir is not None:
        return resume(run_dir, progress=False)
    return train(TrainConfig.from_dict(config), progress=False)
