"""The VQGAN image tokenizer: model (taming architecture), api (encode/decode), losses, schema, convert."""
