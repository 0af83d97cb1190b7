"""A small CLIP for 32 px emoji, trained on the train split only: the reranker and the R-precision, CLIP-score and
FID-CLIP backbone of the emoji eval (configs/eval/emoji.py).

    dalle train --config configs/clip_emoji.py --workdir outputs/emoji/clip

Needs the emoji dataset (`dalle data --config configs/emoji_tiny.py`) and the captions' tokenizer
(data.tokenizer_path, `dalle tokenizer train --config configs/emoji_tiny.py`). ViT 32 px / patch 4, width 128,
2+2 layers. Never sees validation or zero-shot images: it reads the train split. Append `,root=DIR` as for
configs/emoji_tiny.py.
"""

from ml_collections import ConfigDict

from dalle import config as config_lib


def get_config(arg=None):
    variant, root = config_lib.variant_and_root(arg, ("s32",), default_root="outputs/emoji")
    tiny = config_lib.sibling_config(__file__, "emoji_tiny.py").get_config(f"root={root}")

    c = ConfigDict()
    c.name = "clip_emoji"
    c.seed = 0
    c.data = tiny.data
    c.model = ConfigDict(dict(
        kind="clip", name="clip_emoji_s32", embed_dim=128, image_size=32, patch_size=4,
        vision_width=128, vision_layers=2, vision_heads=4, vision_mlp_dim=512,
        context_length=c.data.max_text_length, vocab_size=c.data.vocab_size, text_width=128, text_layers=2,
        text_heads=4, text_mlp_dim=512, activation="gelu", text_pool="eos", eos_id=-1, tokenizer="sentencepiece",
    ))
    c.train = ConfigDict()
    c.train.batch_size = 128  # contrastive: every other caption in the batch is a negative
    c.train.num_steps = 440  # a fixed recipe that ends inside the 4.5-minute budget here
    c.train.max_minutes = 4.5
    c.train.optimizer = ConfigDict(dict(name="adamw", lr=1e-3, weight_decay=0.1))
    c.train.schedule = ConfigDict(dict(name="cosine", warmup_steps=100, end_fraction=0.05))
    c.train.grad_clip_norm = 1.0
    c.train.log_every = 50
    c.train.eval_every = 200
    c.train.eval_batches = 2
    c.train.checkpoint_every = 200
    c.mesh = ConfigDict(dict(axes=("data", "fsdp", "model"), shape=(-1, 1, 1)))
    return c
