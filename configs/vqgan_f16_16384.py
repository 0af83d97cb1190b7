"""The published ImageNet VQGAN that dalle-mini uses (taming-transformers `vqgan_imagenet_f16_16384`):
256 px -> 16x16 tokens from a 16384-code codebook, 76,073,859 params.

    dalle convert vqgan --from last.ckpt --out ckpt/vqgan_f16_16384     # or a vqgan-jax flax checkpoint dir
    dalle config show --config configs/vqgan_f16_16384.py

Variant `finetune` adds the GAN training recipe of taming's ImageNet config (disc_start 250001 there; a finetune
starts the discriminator at once) and `vqgan_loss.finetune_from` must point at the converted checkpoint. It reads
your images at 256 px from a folder with .txt captions (any data source works: --config.data.source=...):

    dalle data --config configs/vqgan_f16_16384.py:finetune --config.data.path=/my/images
    dalle train --config configs/vqgan_f16_16384.py:finetune --config.data.path=/my/images --workdir runs/ft
"""

from ml_collections import ConfigDict


def get_config(arg=None):
    c = ConfigDict()
    c.name = "vqgan_f16_16384"
    c.model = ConfigDict(dict(
        kind="vqgan", resolution=256, in_channels=3, out_ch=3, ch=128, ch_mult=(1, 1, 2, 2, 4),
        num_res_blocks=2, attn_resolutions=(16,), z_channels=256, dropout=0.0, n_embed=16384, embed_dim=256,
        beta=0.25, legacy_loss=True,  # the published model was trained with taming's legacy weighting
    ))
    if arg in (None, ""):
        return c
    if arg != "finetune":
        raise ValueError(f"unknown variant {arg!r} (known: finetune)")
    c.data = ConfigDict(dict(source="folder", path="", image_size=256, data_dir="outputs/vqgan_finetune/tfds",
                             validation_fraction=0.01))
    c.train = ConfigDict(dict(batch_size=8, num_steps=1000))
    c.train.optimizer = ConfigDict(dict(name="adam", lr=4.5e-6 * 8, b1=0.5, b2=0.9))
    c.train.schedule = ConfigDict(dict(name="constant", warmup_steps=0))
    c.train.grad_clip_norm = 0.0
    c.vqgan_loss = ConfigDict(dict(disc_start=0, disc_weight=0.8, codebook_weight=1.0,
                                   finetune_from="ckpt/vqgan_f16_16384"))
    return c
