"""Inference from any edgemlic artifact, with numpy, Pillow and one inference library.

`edgemlic.runtime` imports no torch: a Jetson app embeds it with ONNX Runtime or TensorRT alone.
Only a PyTorch checkpoint (`.pt`) pulls torch in, and only when one is loaded. Each backend's options
type is here too: `Predictor("model.onnx", options=OpenVinoOptions(hint="throughput"))`.
"""

from edgemlic.runtime.backend import Backend, BackendOptions
from edgemlic.runtime.loader import load_backend
from edgemlic.runtime.onnx_backend import OnnxRuntimeOptions
from edgemlic.runtime.openvino_backend import OpenVinoOptions
from edgemlic.runtime.predictor import Prediction, Predictor
from edgemlic.runtime.smoothing import StreamSmoother
from edgemlic.runtime.tensorrt_backend import TensorRTOptions
from edgemlic.runtime.torch_options import TorchOptions

__all__ = [
    "Backend",
    "BackendOptions",
    "OnnxRuntimeOptions",
    "OpenVinoOptions",
    "Prediction",
    "Predictor",
    "StreamSmoother",
    "TensorRTOptions",
    "TorchOptions",
    "load_backend",
]
