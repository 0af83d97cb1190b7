"""A CPU VQGAN for 32 px emoji (configs/emoji.py): f4 -> 8x8 tokens, 2048 codes, trained with its GAN losses.

    dalle data --config configs/emoji.py
    dalle train --config configs/vqgan_emoji.py --workdir outputs/emoji/vqgan

The architecture of configs/vqgan_f4_32.py (the shapes world's) with a 4x larger codebook: real designed images
(edges, shading, faces) carry more per 4x4 patch than plain shapes, and with 64 tokens per image the codebook size
sets the reconstruction error (BENCHMARKS.md: a k-means codebook of raw 4x4 patches, by codebook size). A fixed-step recipe sized for <= 9 minutes on 2 CPU cores
(EVAL.md has what it measured): plain autoencoder warm-up, k-means++ codebook seeding, dead-code
restarts, then the PatchGAN discriminator for the last part. Variant `folder`: your own images (a folder with
.txt captions, `--config.data.path=DIR`; configs/emoji.py:folder). Append `,root=DIR` to move the data and the
output (default outputs/emoji).
"""

from ml_collections import ConfigDict

from dalle import config as config_lib


def get_config(arg=None):
    variant, root = config_lib.variant_and_root(arg, ("s32", "folder"), default_root="outputs/emoji")
    c = ConfigDict()
    c.name = "vqgan_emoji"
    c.seed = 0
    c.model = ConfigDict(dict(
        kind="vqgan", resolution=32, ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(8,),
        z_channels=64, dropout=0.0, n_embed=2048, embed_dim=32, beta=0.25, norm_groups=8,
    ))
    c.data = config_lib.sibling_config(__file__, "emoji.py").data_config(f"{variant},root={root}")
    c.train = ConfigDict(dict(batch_size=16, num_steps=1100, max_minutes=9.0, log_every=50,
                              checkpoint_every=250, sample_every=500, eval_every=500, eval_batches=8))
    c.train.optimizer = ConfigDict(dict(name="adam", lr=1e-3, b1=0.9, b2=0.99))
    c.train.schedule = ConfigDict(dict(name="cosine", warmup_steps=50, end_fraction=0.1))
    c.train.grad_clip_norm = 0.0
    c.vqgan_loss = ConfigDict(dict(l1_weight=1.0, l2_weight=8.0, quantize_start=200,
                                   disc_start=1000, disc_weight=0.5, disc_ndf=32, disc_num_layers=2,
                                   restart_dead_codes=True, dead_code_threshold=0.05, usage_decay=0.95,
                                   restart_every=50))
    return c
