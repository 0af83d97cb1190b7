"""A text-conditional GAN for the captioned-shapes world at 32 px, sized for <= 15 minutes on a 2-core CPU.

    dalle train --config configs/gan_shapes.py --workdir outputs/demo/gan

Needs the demo tokenizer (data.tokenizer_path, `dalle tokenizer train --config configs/shapes_tiny.py`); images
are rendered on the fly. Sentence encoder = the shapes CLIP's text tower architecture (configs/clip_shapes.py),
trained from scratch by the discriminator's matching-aware loss (0.42 M params); generator 0.52 M, discriminator
0.32 M. After ~350 steps (85 s) colours already follow the caption; positions and shapes need the rest of the budget.
Variants: `default`; `clip` (the sentence encoder initialised from the demo's shapes CLIP, <root>/clip/model, and
kept frozen); `xmc` (adds XMC-GAN's contrastive losses). Append `,root=DIR` as for configs/shapes_tiny.py.
The exported model (<workdir>/model) loads with dalle.modeling.gan.api.GANGenerator.
"""

from ml_collections import ConfigDict

from dalle import config as config_lib

SAMPLE_PROMPTS = ("a red circle", "a small blue square in the top left", "a large green star in the center",
                  "a yellow triangle at the bottom right")


def _shapes_data():
    return config_lib.sibling_config(__file__, "shapes_data.py").data_config("one_object_32")


def get_config(arg=None):
    variant, root = config_lib.variant_and_root(arg, ("default", "clip", "xmc"))

    c = ConfigDict()
    c.name = f"gan_shapes_{variant}"
    c.seed = 0
    c.data = _shapes_data()
    c.data.tokenizer_path = f"{root}/tokenizer/spm.model"
    c.data.vocab_size = 128
    c.data.tokenizer_model_type = "word"  # the demo's vocabulary (configs/shapes_tiny.py)
    c.data.unknown_words = "drop"  # as configs/shapes_tiny.py reads prompts
    c.data.max_text_length = 18
    c.model = ConfigDict(dict(
        kind="gan", image_size=32, z_dim=64, cond_dim=64, gen_channels=(128, 64, 32, 16), gen_norm="layer",
        disc_channels=(32, 64, 128),
        # The text tower of configs/clip_shapes.py, so that variant `clip` drops its params in unchanged.
        context_length=18, vocab_size=128, embed_dim=64, text_width=128, text_layers=2, text_heads=4,
        text_mlp_dim=512, activation="gelu", text_encoder_init="", train_text_encoder=True,
    ))
    if variant == "clip":
        c.model.text_encoder_init = f"{root}/clip/model"
        c.model.train_text_encoder = False
    c.gan_loss = ConfigDict(dict(mismatch_weight=0.5, r1_gamma=0.0, contrastive_weight=0.0, disc_lr_scale=2.0,
                                 ema_decay=0.995, summary_noise=4))
    if variant == "xmc":
        c.gan_loss.contrastive_weight = 1.0
        c.gan_loss.contrastive_temperature = 0.1

    c.train = ConfigDict()
    c.train.batch_size = 32
    # A fixed step count sized to the budget: 2500 steps took 6.5 minutes on a quiet 2-core dev machine (6.45 steps/s
    # through the loop, compile included; `dalle train --config configs/gan_shapes.py`), so 5000 steps fill ~13 of
    # the 15 minutes. The schedule is constant, so the time limit - a safety stop on a slower machine - ends the run
    # at a usable model.
    c.train.num_steps = 5000
    c.train.max_minutes = 15.0
    # Adam with a short memory of the first moment (beta1 0.5), as GANs usually train: the two players' targets move.
    c.train.optimizer = ConfigDict(dict(name="adam", lr=2e-4, b1=0.5, b2=0.999))
    c.train.schedule = ConfigDict(dict(name="constant", warmup_steps=50))
    c.train.grad_clip_norm = 0.0
    c.train.log_every = 50
    c.train.eval_every = 0
    c.train.checkpoint_every = 500
    c.train.sample_every = 500
    c.train.sample_prompts = SAMPLE_PROMPTS
    c.mesh = ConfigDict(dict(axes=("data", "fsdp", "model"), shape=(-1, 1, 1)))
    return c
