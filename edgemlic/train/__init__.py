"""Training, read as torchvision's references/classification reads: `config` (the one TrainConfig, no
torch), `loop` (train_one_epoch, evaluate, the epoch loop, checkpoints on rank 0), `datasets`, `optim`
and `losses` (factories taking plain arguments), `distributed` (process groups), `launch` (local
processes) and `run_log` (progress bar and run files). Imports only run downward in that list's reverse.
"""
