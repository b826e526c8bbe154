"""Wine-quality regression service: data, the ONNX model and its HTTP API (training is the `training` package)."""
