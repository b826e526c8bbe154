"""Wine-quality regression service: data, training, the ONNX model and its HTTP API."""
