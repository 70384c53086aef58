"""Export: a checkpoint to ONNX graphs (FP32, FP16, INT8), then to TensorRT engines and deployment recipes.

`pipeline.export_model` is the one entry point of the ONNX export (`edgemlic export` wraps it); the
modules beside it each do one job: `onnx` (graph I/O, the card in metadata, the gates, the FP32 export),
`fp16`, `int8` (calibration and quantization), `mixed` (INT8 within an accuracy budget), `report`, and
the torch-free side that engine building uses: `onnx_proto`, `onnx_info`, `inspector`, `tensorrt`,
`recipes`, `readme`, `deepstream`. This package imports nothing, so reading a graph for an engine build
does not load the exporter.
"""
