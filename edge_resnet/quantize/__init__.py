"""Make the artifacts: recipes, calibration statistics and ranges, TFLite and ONNX."""
