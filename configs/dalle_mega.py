"""dalle-mini's `mega` model (DalleBart, d 2048, 24+24 layers, 32 heads: ~2.6 B params) on a TPU v3-256.

    dalle train --config configs/dalle_mega.py --workdir gs://bucket/dalle_mega --coordinator auto  # every host
    dalle train --config configs/dalle_mega.py --dry_run                                            # on a CPU

Recipe (the "DALL·E Mega - Training Journal" report, wandb.ai/dalle-mini/dalle-mini/reports): batch 4224, lr 1e-4,
warmup 10k, bf16 compute / fp32 weights, model-parallel mesh (heads, mlp and vocab split 4 ways on `model`, weights
ZeRO-sharded 8 ways on `fsdp`, 8-way data parallel).
Variant `v3_64`: the same model on 64 cores (a smaller mesh that a CPU dry run compiles faster).
"""

from ml_collections import ConfigDict

from dalle.modeling import presets


def get_config(arg=None):
    arg = arg or "v3_256"
    if arg not in ("v3_256", "v3_64"):
        raise ValueError(f"unknown variant {arg!r} (known: v3_256, v3_64)")
    c = ConfigDict()
    c.name = f"dalle_mega_{arg}"
    c.model = presets.mega()
    c.model.remat = True
    c.data = ConfigDict(dict(
        source="encoded", encoded_dir="data/encoded/laion_f16", tokenizer_path="data/tokenizer/spm_50k.model",
        vocab_size=c.model.encoder_vocab_size, max_text_length=64, blank_caption_prob=0.1, image_size=256,
        vqgan_checkpoint="data/vqgan_f16_16384",
    ))
    devices = 256 if arg == "v3_256" else 64
    c.train = ConfigDict(dict(batch_size=4224 if arg == "v3_256" else 1056, grad_accum_steps=1,
                              num_steps=500_000, compute_dtype="bfloat16", grad_clip_norm=1.0, log_every=100,
                              eval_every=5000, checkpoint_every=2000, keep_checkpoints=3, peak_flops=123e12 / 2))
    c.train.optimizer = ConfigDict(dict(name="adafactor", lr=1e-4))
    c.train.schedule = ConfigDict(dict(name="rsqrt", warmup_steps=10_000))
    c.mesh = ConfigDict(dict(axes=("data", "fsdp", "model"), shape=(-1, 8, 4), target_devices=devices))
    return c
