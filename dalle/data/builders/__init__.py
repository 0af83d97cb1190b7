"""TensorFlow Datasets builders of dalle's own datasets (imported on demand: they import TensorFlow)."""
