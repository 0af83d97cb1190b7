"""Training tasks: one per model family (see dalle/train/task.py)."""
