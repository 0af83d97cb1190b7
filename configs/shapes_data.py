"""Data-only configs of the captioned-shapes world (dalle/data/shapes.py); merge into a training config or use
to build the tfds dataset.

    dalle config show --config configs/shapes_data.py:one_object_32
    variants: one_object_32 (default; the fast CPU demo), multi_32, one_object_64, multi_64,
              backgrounds_64 (1-3 objects on 4 background colors), all_shapes_64 (9 shapes, 11 colors, 3 sizes)
"""

from ml_collections import ConfigDict

VARIANTS = ("one_object_32", "multi_32", "one_object_64", "multi_64", "backgrounds_64", "all_shapes_64")


def data_config(arg=None) -> ConfigDict:
    """The `data` section alone (other configs call this to embed a shapes world)."""
    arg = arg or "one_object_32"
    if arg not in VARIANTS:
        raise ValueError(f"unknown variant {arg!r} (known: {', '.join(VARIANTS)})")
    d = ConfigDict()
    d.source = "shapes"
    d.seed = 0
    d.image_size = 32 if arg.endswith("_32") else 64
    d.min_objects = 1
    d.max_objects = 1 if arg.startswith("one_object") else 3
    d.held_out_pairs = ("red star", "blue triangle", "green circle", "yellow square")
    d.held_out_relations = ("circle left_of square", "triangle above star") if d.max_objects > 1 else ()
    d.train_size, d.validation_size, d.zero_shot_size = 20000, 1000, 1000
    if arg == "backgrounds_64":
        d.backgrounds = ("black", "white", "gray", "navy")
    if arg == "all_shapes_64":
        d.shapes = ("circle", "square", "triangle", "star", "cross", "diamond", "heart", "hexagon", "crescent")
        d.colors = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "white", "pink", "brown", "gray")
        d.sizes = ("small", "medium", "large")
    return d


def get_config(arg=None):
    c = ConfigDict()
    c.name = f"shapes_{arg or 'one_object_32'}"
    c.data = data_config(arg)
    return c
