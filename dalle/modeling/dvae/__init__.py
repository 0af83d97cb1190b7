"""OpenAI DALL·E's discrete VAE as an image tokenizer: model (the `dall-e` package's architecture), api
(encode/decode), losses (Gumbel-softmax relaxation, logit-Laplace likelihood, KL to the uniform prior), schema,
convert."""
