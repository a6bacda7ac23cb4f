"""Build or load a Keras ResNet and fold its BatchNorm: the float model."""
