"""edgemlic: multilabel image classifiers from PyTorch training to edge inference.

Importing the package pulls in nothing heavy: torch stays out of the runtime path.
"""

__version__ = "0.1.0"
