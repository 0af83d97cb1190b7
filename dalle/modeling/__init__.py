"""dalle.modeling package."""
