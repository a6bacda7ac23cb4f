"""scikit-learn's bundled handwritten digits (real data, shipped inside the
package) as RGB images of any size, and small ResNets trained on them: the
same helpers that train the shipped demo model."""

from edge_resnet.model.demo import TRAIN_SAMPLES, digit_pixels, shifted, train_digits_resnet  # noqa: F401
