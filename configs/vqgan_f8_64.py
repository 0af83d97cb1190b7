"""A small CPU VQGAN for the captioned-shapes data at 64 px: f8 -> 8x8 tokens, 512 codes (~3.4 M params).

    dalle train --config configs/vqgan_f8_64.py --workdir runs/vqgan_f8_64
"""

from ml_collections import ConfigDict


def get_config(arg=None):
    c = ConfigDict()
    c.name = "vqgan_f8_64"
    c.model = ConfigDict(dict(
        kind="vqgan", resolution=64, ch=32, ch_mult=(1, 2, 2, 4), num_res_blocks=1, attn_resolutions=(8,),
        z_channels=64, dropout=0.0, n_embed=512, embed_dim=64, beta=0.25,
        norm_groups=1,  # per-channel groups erase colour on plain shapes scenes (see configs/vqgan_f4_32.py)
    ))
    c.data = ConfigDict(dict(source="shapes", image_size=64))
    c.train = ConfigDict(dict(batch_size=32, num_steps=6000, log_every=50, checkpoint_every=500,
                              sample_every=500, eval_every=0))
    c.train.optimizer = ConfigDict(dict(name="adam", lr=2e-4, b1=0.5, b2=0.9))
    c.train.schedule = ConfigDict(dict(name="constant", warmup_steps=100))
    c.train.grad_clip_norm = 0.0
    c.vqgan_loss = ConfigDict(dict(disc_start=3000, disc_weight=0.8, disc_ndf=32, disc_num_layers=2,
                                   restart_dead_codes=True))
    if arg not in (None, ""):
        raise ValueError(f"unknown variant {arg!r}")
    return c
