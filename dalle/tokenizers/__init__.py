"""Text tokenizers: sentencepiece (trained on a dataset's captions), dalle-mini's BART BPE, OpenAI CLIP's BPE."""
