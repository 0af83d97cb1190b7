"""A CPU dVAE (OpenAI DALL·E's tokenizer) for 32 px captioned shapes: 3 groups (f4) -> 8x8 codes like the CPU VQGAN
(configs/vqgan_f4_32.py), 512 codes, ~0.24 M params; 5000 steps, about 12 minutes on 2 cores (~7 steps/s).

    dalle train --config configs/dvae_shapes.py --workdir outputs/dvae_shapes

The architecture is the published one's (`dall_e/encoder.py`, `dall_e/decoder.py`) with one group fewer (a
factor of 4: 8x8 codes cover the small shapes, 4x4 would not) and narrower; the objective is the paper's ("Zero-Shot
Text-to-Image Generation", appendix A.2) with its schedules compressed to this run.
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
    c.train = ConfigDict(dict(batch_size=32, num_steps=5000, max_minutes=15.0, log_every=50, checkpoint_every=500,
                              sample_every=500, eval_every=500, eval_batches=4, grad_clip_norm=0.0))
    c.train.optimizer = ConfigDict(dict(name="adam", lr=2e-3, b1=0.9, b2=0.999))
    c.train.schedule = ConfigDict(dict(name="cosine", warmup_steps=100, end_fraction=0.05))
    # The paper anneals tau from 1 to 1/16 over 150k of ~3M updates and raises beta from 0 to 6.6 over the first
    # 5000; here tau reaches 1/16 at 60% of the run and beta its end value in the first 10%. The loss is per pixel
    # value, so beta weighs the KL per code against the pixel values a code stands for: 4x4x3 = 48 here, 8x8x3 =
    # 192 in the paper, hence 6.6 * 48 / 192 = 1.65 for the same balance.
    c.dvae_loss = ConfigDict(dict(temperature_start=1.0, temperature_end=1.0 / 16.0, temperature_steps=3000,
                                  temperature_shape="cosine", kl_weight_start=0.0, kl_weight_end=1.65,
                                  kl_weight_steps=500, kl_weight_shape="cosine", summary_images=8))
    return c
