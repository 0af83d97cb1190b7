"""dalle.train package."""
