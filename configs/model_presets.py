"""Model-only configs (the `model` section) for the text-to-image models; see dalle/modeling/presets.py.

    dalle config --config configs/model_presets.py:mini          # dalle-mini config/mini, 538.6 M params
    dalle config --config configs/model_presets.py:mega          # ~2.6 B params
    dalle config --config configs/model_presets.py:tiny --config.model.ln_positions=cogview

Variants: mini (default), mini_glu, mega, tiny, micro, decoder_only_tiny. Training configs (configs/dalle_mini.py,
configs/shapes_tiny.py, ...) add the data/train/mesh sections.
"""

from ml_collections import ConfigDict

from dalle.modeling import presets

VARIANTS = {
    "mini": presets.mini,
    "mini_glu": presets.mini_glu,
    "mega": presets.mega,
    "tiny": presets.tiny,
    "micro": presets.micro,
    "decoder_only_tiny": presets.tiny_decoder_only,
}


def get_config(arg=None):
    name = arg or "mini"
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r} (known: {', '.join(VARIANTS)})")
    c = ConfigDict()
    c.name = f"model_{name}"
    c.model = VARIANTS[name]()
    return c
