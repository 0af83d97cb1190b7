"""A CPU dVAE (OpenAI DALL·E's tokenizer) for 32 px captioned shapes: 3 groups (f4) -> 8x8 codes like the CPU VQGAN
(configs/vqgan_f4_32.py), 512 codes, ~0.24 M params; 5000 steps (minutes on 2 cores: BENCHMARKS.md, dVAE quality).

    dalle train --config configs/dvae_shapes.py --workdir outputs/dvae_shapes

The architecture is the published one's (`dall_e/encoder.py`, `dall_e/decoder.py`) with one group fewer (a
factor of 4: 8x8 codes cover the small shapes, 4x4 would not) and narrower; the objective is the paper's ("Zero-Shot
Text-to-Image Generation", appendix A.2) with its schedules compressed to this run, plus the `dvae_loss` options
that stop its codebook collapsing on these mostly-black images (issue 20; with the paper's recipe alone every
setting tried ended with a few codes and objects decoded in one yellow-grey). What each one does here, found by
leaving it out of short runs:

  foreground_weight     object pixels weigh up to 11x in the reconstruction term; unweighted, the few object
                        pixels lose to the background and objects decode in the wrong colour
  reconstruction = mse  the logit-Laplace scales shrink without bound on the exactly flat background and the
                        decoder is slow to draw objects
  kmeans_init           the encoder's output conv seeded by k-means++ on its features after the first step, so
                        the codes mean something before the encoder's first gradients (which chase the
                        image-wide error) pull every position to one code; without it the run collapses
  restart_dead_codes    unused codes split live ones at badly reconstructed positions (more codes in use),
                        stopped for the last fifth of the run so the exported weights have settled
  encoder_freeze_steps  the decoder learns the seeded codes first
"""

from ml_collections import ConfigDict

from dalle import config as config_lib


def _shapes_data():
    return config_lib.sibling_config(__file__, "shapes_data.py").data_config("one_object_32")


def get_config(arg=None):
    if arg not in (None, ""):
        raise ValueError(f"configs/dvae_shapes.py has no variants, got {arg!r}")
    c = ConfigDict()
    c.name = "dvae_shapes"
    c.seed = 0
    c.model = ConfigDict(dict(kind="dvae", resolution=32, input_channels=3, output_channels=3, n_hid=32,
                              n_blk_per_group=1, n_init=32, vocab_size=512, group_count=3))
    c.data = _shapes_data()
    c.train = ConfigDict(dict(batch_size=32, num_steps=5000, max_minutes=30.0, log_every=50, checkpoint_every=500,
                              sample_every=500, eval_every=500, eval_batches=4, grad_clip_norm=0.0))
    c.train.optimizer = ConfigDict(dict(name="adam", lr=2e-3, b1=0.9, b2=0.999))
    c.train.schedule = ConfigDict(dict(name="cosine", warmup_steps=100, end_fraction=0.05))
    # The paper anneals tau from 1 to 1/16 over 150k of ~3M updates and raises beta from 0 to 6.6 over the first
    # 5000; here tau reaches 1/16 at 60% of the run and beta its end value in the first 10%. The loss is per pixel
    # value, so beta weighs the KL per code against the pixel values a code stands for: 4x4x3 = 48 here, 8x8x3 =
    # 192 in the paper, hence 6.6 * 48 / 192 = 1.65 for the same balance.
    c.dvae_loss = ConfigDict(dict(temperature_start=1.0, temperature_end=1.0 / 16.0, temperature_steps=3000,
                                  temperature_shape="cosine", kl_weight_start=0.0, kl_weight_end=1.65,
                                  kl_weight_steps=500, kl_weight_shape="cosine", summary_images=8,
                                  reconstruction="mse", mse_sigma=0.1, foreground_weight=10.0, kmeans_init=True,
                                  kmeans_logit_scale=10.0, encoder_freeze_steps=200, restart_dead_codes=True,
                                  restart_every=25, usage_decay=0.9, dead_code_threshold=0.03,
                                  restart_until=4000))
    return c
