"""dalle.eval package."""
