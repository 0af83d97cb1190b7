"""A text-to-image model that learns the captioned-shapes world on a 2-core CPU in minutes (its `dalle demo`).

    dalle train --config configs/shapes_tiny.py --workdir outputs/demo/dalle

Needs the demo's earlier stages (or `dalle demo --config configs/shapes_tiny.py`, which runs them): the tokenizer
(data.tokenizer_path), the CPU VQGAN (data.vqgan_checkpoint: configs/vqgan_f4_32.py with `--config.model.n_embed=`
`image_codes(variant)`, 512 for one object, and on the multi-object world `--config.vqgan_loss.foreground_weight=`
`MULTI_VQGAN_FOREGROUND_WEIGHT`) and the pre-encoded data (data.encoded_dir, `dalle encode`).
What this config reaches, and in how many minutes: EVAL.md (the shapes world sections).

Variants: `decoder_only` (default: the single-stream DALL·E/CogView model, d 128, 4 layers), `dalle_bart`
(the encoder-decoder, same width), `multi` (1-3 objects per image, longer captions; decoder-only), `multi_dalle_bart`
(the encoder-decoder on that world: the better multi-object recipe, EVAL.md), `dvae` (the default model over the codes of OpenAI DALL·E's tokenizer,
configs/dvae_shapes.py, instead of the VQGAN's: DALL·E vs DALL·E mini on one world; it shares the root's data,
tokenizer and CLIP and writes <root>/dvae, <root>/encoded_dvae and <root>/dalle_dvae), `multi_dalle_bart_dvae` (the
multi-object encoder-decoder over dVAE codes, beside `multi`'s artifacts in the same way: give it the multi root,
e.g. `root=outputs/multi`, not the one-object demo's). Append `,root=DIR` to put every artifact under DIR instead of outputs/demo, e.g.
`configs/shapes_tiny.py:dalle_bart,root=outputs/bart`.
"""

from ml_collections import ConfigDict

from dalle import config as config_lib


EXAMPLE_PROMPTS = (
    "a red circle",
    "a small blue square in the top left",
    "a large green star in the center",
    "a yellow triangle at the bottom right",
    "a purple diamond",
    "a small white cross on the left",
    "an orange star",
    "a cyan circle in the bottom left",
)


VARIANTS = ("decoder_only", "dalle_bart", "multi", "multi_dalle_bart", "dvae", "multi_dalle_bart_dvae")
MULTI = ("multi", "multi_dalle_bart", "multi_dalle_bart_dvae")
DVAE = ("dvae", "multi_dalle_bart_dvae")  # over configs/dvae_shapes.py's codes instead of the VQGAN's
ENCODER_DECODER = ("dalle_bart", "multi_dalle_bart", "multi_dalle_bart_dvae")


# The multi-object VQGAN weighs object pixels up to 1 + 16 times the background's (configs/vqgan_f4_32.py: 1 + 4,
# measured on one object): a multi-object scene's small shapes are a few pixels across, and at 4 the round trip
# turned many small stars into diamonds and squares into circles. Of 4, 8, 16 and 32 at the same steps, 16 kept the
# most scenes whole (EVAL.md, "the multi-object world: what the image tokenizer keeps").
MULTI_VQGAN_FOREGROUND_WEIGHT = 16.0


def image_codes(variant: str) -> int:
    """Codebook size of the variant's image tokenizer (configs/vqgan_f4_32.py's `n_embed`, or the dVAE's).

    One object: 512 VQGAN codes. The model over them draws held-out colour-shape pairs, which the decoder-only
    models over 2048 codes almost never drew, and matched the 2048-code model trained beside it on validation
    prompts (EVAL.md, DALL·E's tokenizer vs DALL·E mini's; earlier 2048-code runs did better there): fewer codes
    are shared by more colours and shapes, so a held-out pair's codes are reachable from its words. The
    multi-object world keeps the 2048 its recipes were measured with."""
    if variant in DVAE:
        return 512  # configs/dvae_shapes.py's codes (also 8x8 per 32 px image)
    return 2048 if variant in MULTI else 512


def _shapes_data(variant):
    return config_lib.sibling_config(__file__, "shapes_data.py").data_config(variant)


def get_config(arg=None):
    variant, root = config_lib.variant_and_root(arg, VARIANTS)
    multi = variant in MULTI

    c = ConfigDict()
    c.name = f"shapes_tiny_{variant}"
    c.seed = 0
    c.data = _shapes_data("multi_32" if multi else "one_object_32")
    c.data.data_dir = f"{root}/tfds"
    if multi:
        # Five times the world's training scenes: over 20000, multi_dalle_bart's 4000 steps showed each scene many
        # times and its held-out loss nearly flattened; over 100000 it kept falling, and the model drew stated
        # relations more often (EVAL.md, the encoder-decoder against training steps). Every multi variant takes
        # it, so that one root holds one world (they share its tfds data, and `multi` its encoded dir too);
        # `multi` and `multi_dalle_bart_dvae` were measured over 20000. The build and the encoding take a few
        # minutes more; the CLIP keeps configs/clip_shapes.py's world.
        c.data.train_size = 100_000
    c.data.tokenizer_path = f"{root}/tokenizer/spm.model"
    c.data.vocab_size = 128
    # Whole words: the world has ~110 of them, and subword pieces would make captions too long to fit.
    c.data.tokenizer_model_type = "word"
    # Words outside the world's ~110 (people type "please", "colored", "bottom-right") are left out rather than
    # read as <unk>: the multi-object model drew extra objects for each (EVAL.md, prompts people type).
    c.data.unknown_words = "drop"
    c.data.max_text_length = 40 if multi else 18
    c.data.blank_caption_prob = 0.1  # dalle-mini's recipe: learn the unconditional model for guidance
    c.data.encoded_dir = f"{root}/encoded"
    c.data.vqgan_checkpoint = f"{root}/vqgan/model"
    if variant in DVAE:
        c.data.encoded_dir = f"{root}/encoded_dvae"
        c.data.vqgan_checkpoint = f"{root}/dvae/model"  # the image tokenizer, of the kind data.image_tokenizer names
        c.data.image_tokenizer = "dvae"
    c.data.examples_per_shard = 5000
    c.data.shuffle_buffer = 5000

    if variant in ENCODER_DECODER:
        c.model = ConfigDict(dict(
            kind="dalle_bart", d_model=128, encoder_layers=2, decoder_layers=4, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=512, decoder_ffn_dim=512, use_glu=False,
            ln_positions="preln", encoder_vocab_size=128, image_vocab_size=image_codes(variant),
            max_text_length=c.data.max_text_length, image_length=64, dropout=0.0,
        ))
    else:
        c.model = ConfigDict(dict(
            kind="decoder_only", d_model=128, num_layers=4, num_heads=4, ffn_dim=512, use_glu=False,
            text_vocab_size=128, image_vocab_size=image_codes(variant), max_text_length=c.data.max_text_length,
            image_length=64, dropout=0.0,
        ))
    # On a CPU, 4 unrolled layers train ~20% faster than a scanned layer stack (XLA:CPU's scan backward).
    c.model.scan_layers = False

    c.train = ConfigDict()
    c.train.batch_size = 64
    # A fixed recipe: the cosine schedule ends inside the budget here, 15 minutes for one object and 30 for the
    # multi world, so a slower machine trains the same model, later (the measured minutes of each are in EVAL.md).
    # Steps per variant: `multi` at twice its earlier steps more than doubled its first samples fully right
    # (EVAL.md, "accuracy against training steps"); multi_dalle_bart at 4000 steps drew more two-object scenes right
    # than at 2200 ("the multi-object world: the encoder-decoder against training steps"), but one of its runs here
    # took more than 30 minutes, so it takes 3600, what fits 30 minutes at that run's pace ("The multi-object
    # world (`configs/shapes_tiny.py:multi_dalle_bart`)"). The time limit is only a safety stop; the multi one is
    # 40 minutes, so that a machine shared with other jobs still ends the schedule.
    c.train.num_steps = {"multi": 4400, "multi_dalle_bart": 3600, "multi_dalle_bart_dvae": 2200}.get(variant, 1500)
    c.train.max_minutes = 40.0 if multi else 15.0
    c.train.optimizer = ConfigDict(dict(name="adamw", lr=1e-3, weight_decay=0.01))
    c.train.schedule = ConfigDict(dict(name="cosine", warmup_steps=100, end_fraction=0.05))
    c.train.grad_clip_norm = 1.0
    c.train.log_every = 50
    c.train.eval_every = 400
    c.train.eval_batches = 4
    c.train.checkpoint_every = 200
    c.train.sample_every = 500  # TensorBoard samples of sample_prompts (a few seconds each)
    c.train.sample_prompts = ("a red circle", "a small blue square in the top left", "a large green star")
    c.mesh = ConfigDict(dict(axes=("data", "fsdp", "model"), shape=(-1, 1, 1)))
    # How the exported model samples by default (`dalle generate`, `dalle serve`, `dalle eval`): the CLIP-best of
    # 4 candidates, top-k 8, temperature 0.3 - on the same model, 0.3 drew more first samples fully right than 0.7
    # or 1.0 and kept reranking useful, which greedy decoding (0) does not (EVAL.md, composition experiments).
    # Strong guidance hurts this small model; the demo's eval stage rewrites `guidance` in the exported model with
    # the best scale it measures.
    c.sampling = ConfigDict(dict(guidance=1.5, temperature=0.3, top_k=8, top_p=1.0, candidates=4, keep=1,
                                 clip_checkpoint=f"{root}/clip/model", examples=EXAMPLE_PROMPTS))
    return c


def pipeline(arg=None) -> dict:
    """The other stages of `dalle demo --config configs/shapes_tiny.py[:arg]` (dalle/demo.py)."""
    variant, root = config_lib.variant_and_root(arg, VARIANTS)
    d = get_config(arg).data
    # The world's keys this recipe sets (the rest are defaults in both configs) go to the VQGAN's config too.
    world = [f"--config.data.{k}={_fmt(d[k])}" for k in
             ("seed", "image_size", "min_objects", "max_objects", "colors", "shapes", "sizes", "backgrounds",
              "train_size", "validation_size", "zero_shot_size") if k in d]
    # The VQGAN learns from images of every colour-shape pair and relation: what is held out is a claim about text
    # (no caption, and so no token sequence, ever pairs "red" with "star"). A tokenizer that never saw a red star
    # cannot draw one: its round trip turned most red stars into red blobs (EVAL.md, "what the image tokenizer
    # keeps"), which would measure the tokenizer, not whether the text-to-image model composes.
    world += ["--config.data.held_out_pairs=()", "--config.data.held_out_relations=()"]
    clip_variant = "multi," if variant in MULTI else ""
    # The time limits are safety stops: every stage is a fixed number of steps sized to fit them here (the CLIP's
    # 1500 steps too: a 3-minute limit used to stop it part way, so the reranker was never fully trained).
    vqgan_overrides = [*world, f"--config.model.n_embed={image_codes(variant)}"]
    if variant in MULTI:
        vqgan_overrides.append(f"--config.vqgan_loss.foreground_weight={MULTI_VQGAN_FOREGROUND_WEIGHT}")
    vqgan = ("configs/vqgan_f4_32.py", vqgan_overrides)
    recipe = {"root": root, "vqgan": vqgan,
              "clip": f"configs/clip_shapes.py:{clip_variant}root={root}",
              "eval": f"configs/eval/shapes.py:{'multi,' if variant in MULTI else ''}root={root}",
              "minutes": {"vqgan": 11.0, "dalle": 40.0 if variant in MULTI else 15.0, "clip": 12.0}}
    if variant in DVAE:  # beside the VQGAN demo in the same root
        recipe.update({"vqgan": ("configs/dvae_shapes.py", world), "workdir": "dalle_dvae",
                       "samples": "samples_dvae"})
        recipe["minutes"]["vqgan"] = 30.0  # configs/dvae_shapes.py: its 5000 steps, with room
    return recipe


def _fmt(v) -> str:
    if isinstance(v, (tuple, list)):
        return "(" + ",".join(repr(x) for x in v) + ("," if len(v) == 1 else "") + ")"
    return str(v)
