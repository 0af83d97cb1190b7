"""dalle.data package."""
