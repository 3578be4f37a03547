"""Learning from pixels: preprocessing, tf.data, architectures, training, DICOM checks, inference.

TensorFlow and Keras are imported through `model.tf` only, where their start-up output is kept
off the terminal.
"""
