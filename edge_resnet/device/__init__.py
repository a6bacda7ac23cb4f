"""What runs on the device: runners, benchmarks, TFLite inspection.

Imports nothing from model/, quantize/ or check/, and never TensorFlow or Keras.
"""
