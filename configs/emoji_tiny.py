"""A text-to-image model of real designed images that trains on a 2-core CPU: emoji (configs/emoji.py) at 32 px.

    dalle data --config configs/emoji_tiny.py
    dalle train --config configs/vqgan_emoji.py --workdir outputs/emoji/vqgan
    dalle tokenizer train --config configs/emoji_tiny.py
    dalle encode --config configs/emoji_tiny.py
    dalle train --config configs/emoji_tiny.py --workdir outputs/emoji/dalle
    dalle train --config configs/clip_emoji.py --workdir outputs/emoji/clip
    dalle eval --config configs/eval/emoji.py --checkpoint outputs/emoji/dalle

(`dalle demo --config configs/emoji_tiny.py` runs all of it.) The VQGAN (configs/vqgan_emoji.py, f4: 8x8 = 64
image tokens) and a BPE sentencepiece vocabulary of the captions (1024 pieces, 32 tokens) feed a decoder-only
model (d 128, 4 layers) trained for a fixed number of steps sized to <= 12 minutes here; EVAL.md has what it
measured. Variants: `decoder_only` (default), `dalle_bart` (the encoder-decoder at the same width), `folder`
(decoder-only on your own images: `--config.data.path=DIR`, a folder of images with same-named .txt captions; see
the README's "Your own images"). Append `,root=DIR` to put every artifact under DIR (default outputs/emoji).
"""

from ml_collections import ConfigDict

from dalle import config as config_lib

EXAMPLE_PROMPTS = (
    "grinning face, google style",
    "thumbs up sign, dark skin tone, twitter style",
    "an emoji of a red apple",
    "dog face, twitter style",
    "rocket, google style",
    "waving hand sign, medium skin tone, google style",
    "an emoji of a birthday cake",
    "sun with face, openmoji style",
)


def get_config(arg=None):
    variant, root = config_lib.variant_and_root(arg, ("decoder_only", "dalle_bart", "folder"),
                                                default_root="outputs/emoji")
    data_variant = "folder" if variant == "folder" else "s32"

    c = ConfigDict()
    c.name = f"emoji_tiny_{variant}"
    c.seed = 0
    c.data = config_lib.sibling_config(__file__, "emoji.py").data_config(f"{data_variant},root={root}")
    c.data.tokenizer_path = f"{root}/tokenizer/spm.model"
    c.data.vocab_size = 1024
    # BPE: its merges follow frequency, so the words every caption repeats (skin, tone, style, vendor names)
    # become single pieces; unigram split them ("▁s ty le") at this vocabulary size.
    c.data.tokenizer_model_type = "bpe"
    c.data.max_text_length = 32
    c.data.blank_caption_prob = 0.1  # dalle-mini's recipe: learn the unconditional model for guidance
    c.data.encoded_dir = f"{root}/encoded"
    c.data.vqgan_checkpoint = f"{root}/vqgan/model"
    c.data.examples_per_shard = 8000
    c.data.shuffle_buffer = 8000

    common = dict(image_vocab_size=2048, max_text_length=c.data.max_text_length, image_length=64, dropout=0.0,
                  use_glu=False)
    if variant == "dalle_bart":
        c.model = ConfigDict(dict(
            kind="dalle_bart", d_model=128, encoder_layers=2, decoder_layers=4, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=512, decoder_ffn_dim=512, ln_positions="preln",
            encoder_vocab_size=c.data.vocab_size, **common))
    else:
        # d 128 rather than 192: on a fixed CPU budget the smaller model takes more steps, which is what moved
        # accuracy on the shapes world too (configs/shapes_tiny.py).
        c.model = ConfigDict(dict(kind="decoder_only", d_model=128, num_layers=4, num_heads=4, ffn_dim=512,
                                  text_vocab_size=c.data.vocab_size, **common))
    c.model.scan_layers = False  # unrolled layers train faster on XLA:CPU (configs/shapes_tiny.py)

    c.train = ConfigDict()
    c.train.batch_size = 64
    c.train.num_steps = 950  # a fixed recipe: the cosine schedule ends inside the 12-minute budget here
    c.train.max_minutes = 12.0  # a safety stop only; a stopped run resumes with the same command
    c.train.optimizer = ConfigDict(dict(name="adamw", lr=1e-3, weight_decay=0.01))
    c.train.schedule = ConfigDict(dict(name="cosine", warmup_steps=100, end_fraction=0.05))
    c.train.grad_clip_norm = 1.0
    c.train.log_every = 50
    c.train.eval_every = 500
    c.train.eval_batches = 4
    c.train.checkpoint_every = 250
    c.train.sample_every = 500  # TensorBoard samples of sample_prompts (a few seconds each)
    c.train.sample_prompts = EXAMPLE_PROMPTS[:3]
    c.mesh = ConfigDict(dict(axes=("data", "fsdp", "model"), shape=(-1, 1, 1)))
    c.sampling = ConfigDict(dict(guidance=2.0, temperature=1.0, top_k=32, top_p=1.0, candidates=4, keep=1,
                                 clip_checkpoint=f"{root}/clip/model", examples=EXAMPLE_PROMPTS))
    return c


def pipeline(arg=None) -> dict:
    """The other stages of `dalle demo --config configs/emoji_tiny.py[:arg]` (dalle/demo.py)."""
    variant, root = config_lib.variant_and_root(arg, ("decoder_only", "dalle_bart", "folder"),
                                                default_root="outputs/emoji")
    data_variant = "folder," if variant == "folder" else ""
    return {"root": root, "vqgan": (f"configs/vqgan_emoji.py:{data_variant}root={root}", []),
            "clip": f"configs/clip_emoji.py:root={root}", "eval": f"configs/eval/emoji.py:root={root}",
            "minutes": {"vqgan": 9.0, "dalle": 12.0, "clip": 4.5}}
