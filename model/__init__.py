"""Learning from pixels: preprocessing, tf.data, architectures, training, DICOM checks, inference."""
import os

# Quieten TensorFlow's C++ logging for every module of this package (set before TensorFlow loads).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
