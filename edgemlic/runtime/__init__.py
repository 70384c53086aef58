"""Inference from any edgemlic artifact, with numpy, Pillow and one inference library.

`edgemlic.runtime` imports no torch: a Jetson app embeds it with ONNX Runtime or TensorRT alone.
Only a PyTorch checkpoint (`.pt`) pulls torch in, and only when one is loaded.
"""

from edgemlic.runtime.backend import Backend
from edgemlic.runtime.loader import load_backend
from edgemlic.runtime.predictor import Prediction, Predictor
from edgemlic.runtime.smoothing import StreamSmoother

__all__ = ["Backend", "Prediction", "Predictor", "StreamSmoother", "load_backend"]
