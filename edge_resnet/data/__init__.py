"""Image sets and preprocessing: what the model sees. No TensorFlow."""
