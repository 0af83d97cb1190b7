"""The seed's ways to draw from text, side by side on the one-object shapes world (`dalle eval compare`).

    dalle eval compare --config eval/compare_shapes:root=outputs/demo
    dalle eval compare --config eval/compare_shapes:dvae,root=outputs/demo     (adds DALL·E's tokenizer)

Autoregressive (the demo's DALL·E model over VQGAN codes), CLIP-guided VQGAN (the demo's VQGAN and CLIP, no
text-to-image training) and the text-conditional GAN (configs/gan_shapes.py trained into ROOT/gan), each with one
sample per prompt on the same validation / zero_shot / paraphrase prompts. The demo's CLIP both guides and scores,
so the CLIP-guided row's CLIP score is self-scored (marked). Rows whose model is missing fail with its path: train
them first (`make demo`, `dalle train --config configs/gan_shapes.py --workdir ROOT/gan`). Variant `dvae` adds the
same decoder-only model over the codes of OpenAI DALL·E's tokenizer (`dalle demo --config
configs/shapes_tiny.py:dvae,root=ROOT` trains it into ROOT/dalle_dvae).
"""

from ml_collections import ConfigDict

from dalle import config as config_lib


def get_config(arg=None):
    variant, root = config_lib.variant_and_root(arg, ("default", "dvae"))
    c = config_lib.sibling_config(__file__, "shapes.py").get_config(f"root={root}")
    c.name = "eval_compare_shapes"
    e = c.eval
    e.num_prompts = 50  # per split: CLIP-guided optimisation costs seconds per image
    e.splits = ("validation", "zero_shot", "paraphrase")
    e.completion = False
    e.save_images = False
    c.compare = ConfigDict()
    c.compare.output_dir = f"{root}/compare"
    dvae = (dict(name="autoregressive (dVAE codes)", method="autoregressive", checkpoint=f"{root}/dalle_dvae",
                 workdir=f"{root}/dalle_dvae", scale=None),) if variant == "dvae" else ()
    c.compare.methods = (
        dict(name="autoregressive (VQGAN codes)", method="autoregressive", checkpoint=f"{root}/dalle",
             workdir=f"{root}/dalle", scale=None),
        *dvae,
        dict(name="CLIP-guided VQGAN", method="clip-guided", vqgan=f"{root}/vqgan", clip=f"{root}/clip/model",
             data_from=f"{root}/dalle", steps=100, workdir=""),
        dict(name="text-conditional GAN", method="gan", checkpoint=f"{root}/gan", workdir=f"{root}/gan"),
    )
    return c
