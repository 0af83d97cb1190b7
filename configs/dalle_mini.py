"""dalle-mini's published `mini` model (DalleBart, d 1024, 12+12 layers, GLU 2730: ~0.44 B params) on a TPU v3-8.

    dalle train --config configs/dalle_mini.py --workdir gs://bucket/dalle_mini          # on the TPU VM
    dalle train --config configs/dalle_mini.py --dry_run                                 # on a CPU: fits?

Recipe as dalle-mini trained it (Dayma et al., "DALL·E mini" report; borisdayma/dalle-mini tools/train/train.py):
bf16 compute with fp32 weights, batch 64 per chip-core, gradient accumulation in the step; data = VQGAN-encoded
256 px images (16x16 = 256 tokens) with captions.
Distributed Shampoo (dalle-mini's default) has no maintained package for this jax; adafactor is used instead.
Variants: `mini` (default: config/mini_glu sizes), `mini_4096` (config/mini: GLU 4096, 0.54 B).
"""

from ml_collections import ConfigDict

from dalle.modeling import presets


def get_config(arg=None):
    arg = arg or "mini"
    if arg not in ("mini", "mini_4096"):
        raise ValueError(f"unknown variant {arg!r} (known: mini, mini_4096)")
    c = ConfigDict()
    c.name = f"dalle_{arg}"
    c.model = presets.mini_glu() if arg == "mini" else presets.mini()
    c.model.remat = True
    c.data = ConfigDict(dict(
        source="encoded", encoded_dir="data/encoded/cc12m_f16", tokenizer_path="data/tokenizer/spm_50k.model",
        vocab_size=c.model.encoder_vocab_size, max_text_length=64, blank_caption_prob=0.1, image_size=256,
        vqgan_checkpoint="data/vqgan_f16_16384",
    ))
    c.train = ConfigDict(dict(batch_size=512, grad_accum_steps=1, num_steps=200_000, compute_dtype="bfloat16",
                              grad_clip_norm=1.0, log_every=100, eval_every=2000, checkpoint_every=2000,
                              keep_checkpoints=3, peak_flops=123e12 / 2))  # per core of a v3 chip
    c.train.optimizer = ConfigDict(dict(name="adafactor", lr=5e-4, weight_decay=0.0))
    c.train.schedule = ConfigDict(dict(name="rsqrt", warmup_steps=4000))
    # v3-8 = 8 cores: ZeRO-3 style fully sharded data parallel.
    c.mesh = ConfigDict(dict(axes=("data", "fsdp", "model"), shape=(1, -1, 1), target_devices=8))
    return c
