"""CLIP (OpenAI's architecture): model and loading, and the converter of published weights."""
