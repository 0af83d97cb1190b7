"""A small CLIP for the captioned-shapes world: the reranker, CLIP-score and FID-CLIP backbone of the CPU demo.

    dalle train --config configs/clip_shapes.py --workdir outputs/demo/clip

Needs the demo tokenizer (data.tokenizer_path, `dalle tokenizer train --config configs/shapes_tiny.py`); images
are rendered on the fly, captions tokenized with that vocabulary. ViT 32 px / patch 4 (64 patches), width 128,
2+2 layers (~0.9 M params). Variant `multi` (1-3 objects, 32 text tokens); append `,root=DIR` as for
configs/shapes_tiny.py. The exported model (<workdir>/model) is what `eval.clip_checkpoint` points at.
"""

from ml_collections import ConfigDict

from dalle import config as config_lib


def _shapes_data(variant):
    return config_lib.sibling_config(__file__, "shapes_data.py").data_config(variant)


def get_config(arg=None):
    variant, root = config_lib.variant_and_root(arg, ("one_object", "multi"))
    multi = variant == "multi"

    c = ConfigDict()
    c.name = f"clip_shapes_{variant}"
    c.seed = 0
    c.data = _shapes_data("multi_32" if multi else "one_object_32")
    c.data.tokenizer_path = f"{root}/tokenizer/spm.model"
    c.data.vocab_size = 128
    # Whole words: the world has ~110 of them, and subword pieces would make captions too long to fit.
    c.data.tokenizer_model_type = "word"
    c.data.unknown_words = "drop"  # as configs/shapes_tiny.py reads prompts
    c.data.max_text_length = 40 if multi else 18
    c.model = ConfigDict(dict(
        kind="clip", name=f"clip_shapes_{variant}", embed_dim=64, image_size=32, patch_size=4,
        vision_width=128, vision_layers=2, vision_heads=4, vision_mlp_dim=512,
        context_length=c.data.max_text_length, vocab_size=128, text_width=128, text_layers=2, text_heads=4,
        text_mlp_dim=512, activation="gelu", text_pool="eos", eos_id=-1, tokenizer="sentencepiece",
    ))
    c.train = ConfigDict()
    c.train.batch_size = 128  # contrastive: every other caption in the batch is a negative
    c.train.num_steps = 1500
    c.train.max_minutes = 12.0  # a safety stop above the 1500 steps' time on 2 cores (the demo logs it)
    c.train.optimizer = ConfigDict(dict(name="adamw", lr=1e-3, weight_decay=0.1))
    c.train.schedule = ConfigDict(dict(name="cosine", warmup_steps=100, end_fraction=0.05))
    c.train.grad_clip_norm = 1.0
    c.train.log_every = 50
    c.train.eval_every = 500
    c.train.eval_batches = 2
    c.train.checkpoint_every = 250
    c.mesh = ConfigDict(dict(axes=("data", "fsdp", "model"), shape=(-1, 1, 1)))
    return c
