"""Schema of the `data` config section (see dalle/config.py: register_schema).

One flat section, no `kind`: the keys of the captioned-shapes world (dalle/data/shapes.py) and the keys of the
text / seqio / real-data side live side by side, each block under its own comment. Must stay light: no jax or
TensorFlow imports here (validation runs before any heavy import).
"""

from __future__ import annotations

from ml_collections import ConfigDict

from dalle import config as config_lib
from dalle import registry
from dalle.data import sources as sources_lib

UNKNOWN_WORDS = ("keep", "drop")  # data.unknown_words (dalle/tokenizers/known_words.py)

# Palettes live here (not in shapes.py) so that validation can name a bad color without importing numpy/PIL.
# Object colors were picked far apart in RGB and not on a line through black with each other (a blurred
# orange must not read as brown), so that nearest-palette classification survives blur and VQGAN round trips.
COLOR_PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (240, 220, 40),
    "green": (40, 180, 60),
    "cyan": (40, 200, 220),
    "blue": (40, 80, 230),
    "purple": (150, 60, 200),
    "white": (245, 245, 245),
    "pink": (245, 120, 190),
    "brown": (130, 80, 40),
    "gray": (128, 128, 128),
}
BACKGROUND_PALETTE: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "white": (255, 255, 255),
    "gray": (100, 100, 100),
    "navy": (20, 25, 70),
    "beige": (225, 210, 180),
}
SHAPE_NAMES = ("circle", "square", "triangle", "star", "cross", "diamond", "heart", "hexagon", "crescent")
# Object extent as a fraction of the grid cell (3x3 grid).
SIZE_FRACTIONS: dict[str, float] = {"small": 0.5, "medium": 0.68, "large": 0.88}
RELATIONS = ("left_of", "right_of", "above", "below")
# An object color closer than this (RGB distance) to the background is never drawn on it.
MIN_CONTRAST = 90.0

SHAPES_SOURCE = "shapes"


def data_defaults() -> ConfigDict:
    c = ConfigDict()
    # ---- shared ---------------------------------------------------------------------------------------------
    c.source = SHAPES_SOURCE  # "shapes" (procedural, dalle/data/shapes.py); the text/seqio side adds its own
    c.data_dir = ""  # tfds data_dir for built datasets ("" = tfds default)
    c.seed = 0  # data seed: the same seed gives the same examples (independent of the root `seed`)
    c.image_size = 32  # pixels, square images
    # ---- captioned shapes world (dalle/data/shapes.py, dalle/data/builders/shapes.py) -----------------------
    c.min_objects = 1  # objects per image, each in its own cell of a 3x3 grid
    c.max_objects = 1  # 1..3; 1 is the fast CPU demo level
    c.colors = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "white")  # from COLOR_PALETTE
    c.shapes = ("circle", "square", "triangle", "star", "cross", "diamond")  # from SHAPE_NAMES
    c.sizes = ("small", "large")  # from SIZE_FRACTIONS
    c.backgrounds = ("black",)  # from BACKGROUND_PALETTE; one is drawn per image
    c.same_kind_prob = 0.3  # chance that a further object repeats an earlier one's color+shape ("two red stars")
    # Chance that the caption of two objects of different kinds states their relation (zero_shot scenes of a
    # held-out relation always place their objects: relation_prob / 0.6 of them state it, all from 0.6 up).
    c.relation_prob = 0.3
    # Color-shape pairs ("color shape") and relations ("[color] shape relation [color] shape", relation one of
    # RELATIONS) that never occur in train/validation and make up the zero_shot split.
    c.held_out_pairs = ("red star", "blue triangle", "green circle", "yellow square")
    c.held_out_relations = ("circle left_of square", "triangle above star")
    c.supersample = 4  # shapes are drawn this many times larger, then bicubic down (antialiasing)
    # Split sizes of the tfds builder `captioned_shapes` (the iterators index scenes without a limit).
    c.train_size = 20000
    c.validation_size = 1000
    c.zero_shot_size = 1000
    # ---- text / tokenizer / seqio / real datasets: keys appended by dalle/data (text side) below --------------
    return c


def parse_object_descriptor(words: list[str], colors: tuple[str, ...] | None = None) -> tuple[str | None, str]:
    """`["red", "star"]` -> ("red", "star"); `["star"]` -> (None, "star"). Raises ValueError naming the word."""
    if len(words) == 2:
        color, shape = words
        if color not in COLOR_PALETTE:
            raise ValueError(f"unknown color {color!r} (known: {', '.join(COLOR_PALETTE)})")
        if colors is not None and color not in colors:
            raise ValueError(f"color {color!r} is not in data.colors {tuple(colors)}")
    elif len(words) == 1:
        color, shape = None, words[0]
    else:
        raise ValueError(f"{' '.join(words)!r} is not '[color] shape'")
    if shape not in SHAPE_NAMES:
        raise ValueError(f"unknown shape {shape!r} (known: {', '.join(SHAPE_NAMES)})")
    return color, shape


def parse_relation(text: str) -> tuple[tuple[str | None, str], str, tuple[str | None, str]]:
    """"red circle left_of square" -> ((red, circle), left_of, (None, square))."""
    words = text.split()
    rel = [i for i, w in enumerate(words) if w in RELATIONS]
    if len(rel) != 1:
        raise ValueError(f"{text!r} must contain exactly one relation of {RELATIONS}")
    i = rel[0]
    return parse_object_descriptor(words[:i]), words[i], parse_object_descriptor(words[i + 1:])


def check_data(d: ConfigDict, _: ConfigDict):
    if not d.image_size:  # unset: only the shapes world has a default size, a real-data size must be chosen
        if d.source != SHAPES_SOURCE:
            yield f"data.image_size is required for data.source = {d.source!r} (images are resized to it)"
            return
        d.image_size = data_defaults().image_size  # validation completes the shapes world's own default
    if not 8 <= d.image_size <= 1024:
        yield f"data.image_size = {d.image_size} must be in [8, 1024] (the shapes world is meant for 32..256)"
    # The shapes keys only matter for the procedural world: the `shapes` data source checks them
    # (dalle/data/sources/shapes.py), with check_shapes_world below.


def check_shapes_world(d: ConfigDict):
    """Errors in the captioned-shapes world's keys (the `shapes` source's check; ShapesWorld validates with it)."""
    if not 32 <= d.image_size <= 256:
        yield f"data.image_size = {d.image_size} must be in [32, 256] for data.source='shapes'"
    if not 1 <= d.min_objects <= d.max_objects <= 3:
        yield f"data.min_objects = {d.min_objects}, data.max_objects = {d.max_objects}: need 1 <= min <= max <= 3"
    for key, known in (("colors", COLOR_PALETTE), ("shapes", SHAPE_NAMES), ("sizes", SIZE_FRACTIONS),
                       ("backgrounds", BACKGROUND_PALETTE)):
        values = tuple(d[key])
        if not values:
            yield f"data.{key} is empty"
        for v in values:
            if v not in known:
                yield f"data.{key}: unknown name {v!r} (known: {', '.join(known)})"
        if len(set(values)) != len(values):
            yield f"data.{key} = {values} repeats a name"
    for bg in d.backgrounds:
        if bg in BACKGROUND_PALETTE and not any(
                c in COLOR_PALETTE and _dist(COLOR_PALETTE[c], BACKGROUND_PALETTE[bg]) >= MIN_CONTRAST
                for c in d.colors):
            yield f"data.backgrounds: no color of data.colors stands out on background {bg!r}"
    for key in ("same_kind_prob", "relation_prob"):
        if not 0.0 <= d[key] <= 1.0:
            yield f"data.{key} = {d[key]} must be in [0, 1]"
    if d.supersample < 1 or d.supersample > 16:
        yield f"data.supersample = {d.supersample} must be in [1, 16]"
    for key in ("train_size", "validation_size", "zero_shot_size"):
        if d[key] < 0:
            yield f"data.{key} = {d[key]} must be >= 0"
    pairs = []
    for p in d.held_out_pairs:
        try:
            color, shape = parse_object_descriptor(str(p).split(), tuple(d.colors))
        except ValueError as e:
            yield f"data.held_out_pairs entry {p!r}: {e}"
            continue
        if color is None:
            yield f"data.held_out_pairs entry {p!r} must be 'color shape'"
        elif shape not in d.shapes:
            yield f"data.held_out_pairs entry {p!r}: shape {shape!r} is not in data.shapes"
        else:
            pairs.append((color, shape))
    if len(set(pairs)) >= len(tuple(d.colors)) * len(tuple(d.shapes)):
        yield "data.held_out_pairs holds out every color-shape pair: nothing is left for train"
    for r in d.held_out_relations:
        try:
            a, _, b = parse_relation(str(r))
        except ValueError as e:
            yield f"data.held_out_relations entry {r!r}: {e}"
            continue
        for color, shape in (a, b):
            if shape not in d.shapes or (color is not None and color not in d.colors):
                yield f"data.held_out_relations entry {r!r}: {color or ''} {shape} is not in data.colors/shapes"


def _dist(a, b) -> float:
    return sum((x - y) ** 2 for x, y in zip(a, b)) ** 0.5


config_lib.register_schema("data", data_defaults, check_data)


# ----------------------------------------------------------------------------------------------------------------
# Real-data sources, text normalization, tokenizer, seqio tasks, training pipeline and pre-encoding
# (dalle/data/{images,text,tokenizer,build,tasks,pipeline,encode}.py and dalle/data/builders/{folder,img2dataset,cc}.py).
# These keys are merged into whatever `data` schema is registered above (keys already defined there win), so the
# shapes part and this part can evolve independently.
# ----------------------------------------------------------------------------------------------------------------
ENCODED_FORMATS = ("tfrecord", "array_record")


TEXT_NORMALIZERS = ("caption", "dalle_mini", "none")  # dalle.data.text.NORMALIZERS (not imported: ftfy is heavy)


def real_data_defaults() -> ConfigDict:
    c = ConfigDict()
    # What `dalle data` builds and the tasks read: a name registered by a module of dalle/data/sources (built in:
    # shapes, folder, csv, webdataset, parquet, cc_tsv, yfcc100m, emoji; encoded = an existing `dalle encode` output, no tfds build).
    c.source = "shapes"
    c.path = ""  # input of the real-data builders: a folder, a .csv/.tsv file, or a dir/glob of .tar/.parquet shards
    c.images_dir = ""  # cc_tsv: where the images were downloaded beforehand
    c.cc_image_naming = "index"  # cc_tsv: image file stem = row index | sha1(url) | md5(url) | url basename
    c.caption_column = "caption"  # csv/parquet column (csv without header: second column)
    c.image_column = ""  # csv: path column (default "path" or first); parquet: bytes column (default: auto-detect)
    c.data_dir = ""  # tfds data_dir ("" = tfds default)
    c.image_size = 0  # required (0 = unset; shapes: 32): builders center-crop and resize to this (PIL bicubic)
    c.min_image_side = 16  # images whose shorter side is smaller are skipped (counted as too_small)
    c.validation_fraction = 0.01  # real-data builders: share of examples (by key hash) in the validation split
    # Text.
    c.lowercase = True
    c.ascii_fold = False  # also strip accents (dalle-mini's unidecode step)
    c.max_caption_chars = 0  # > 0: cut longer captions
    # caption: the cleaner above (dalle.data.text) | dalle_mini: dalle-mini's TextNormalizer exactly (a converted
    # dalle-mini with normalize_text: true; needs the `dalle-mini` extra) | none: captions as given.
    c.text_normalizer = "caption"
    c.word_frequency_path = ""  # dalle_mini's hashtag word list ("" = enwiki-words-frequency.txt beside the tokenizer)
    c.tokenizer_path = ""  # sentencepiece .model; `dalle tokenizer train` writes it
    c.vocab_size = 1000  # sentencepiece vocabulary size (pad 0, eos 1, unk 2 included)
    c.tokenizer_model_type = "unigram"  # unigram | bpe | word | char
    c.tokenizer_max_sentences = 2_000_000  # captions sampled for tokenizer training
    c.character_coverage = 0.9995
    c.max_text_length = 64  # text tokens per example, EOS included; longer captions are truncated
    c.blank_caption_prob = 0.0  # training drops captions with this probability (classifier-free guidance)
    # Caption noise in training only (seeded, after normalization; 0 = off): robustness to prompts people type.
    c.caption_word_dropout = 0.0  # each word dropped with this probability (never all of them)
    c.caption_unknown_word_prob = 0.0  # probability of one made-up word inserted at a random place (an unknown word)
    c.caption_swap_prob = 0.0  # probability of two neighbouring words swapped
    # Words the vocabulary does not know (dalle/tokenizers/known_words.py): "keep" (each becomes <unk>) or "drop"
    # (split at punctuation and hyphens, then left out), in training and prompts alike.
    c.unknown_words = "keep"
    # seqio tasks / training stream.
    c.task_name = ""  # "" = derived from the source (dalle_<source>_encoded / dalle_<source>_raw)
    c.mixture = ()  # extra encoded datasets to mix in, as "encoded_dir:rate" strings; the main one has rate 1
    c.shuffle_buffer = 10_000
    # Pre-encoding (`dalle encode`).
    c.encoded_dir = ""  # output of `dalle encode`, input of the encoded tasks
    c.encoded_format = "tfrecord"  # tfrecord | array_record
    c.encode_batch_size = 32  # global images per VQGAN call, split over the mesh
    c.examples_per_shard = 4096  # output shard size; the unit of resumption and of multi-host work
    c.encode_splits = ("train", "validation")  # splits of the tfds dataset to encode (missing ones are skipped)
    c.vqgan_checkpoint = ""  # model directory of the VQGAN used by `dalle encode`
    # The image tokenizer's kind ("vqgan", "dvae": any registered one, dalle.kinds): vqgan_checkpoint must hold
    # one of that kind, checked wherever it is loaded (encode, training, generation, eval, serve). Empty: whatever
    # kind the directory holds (its saved model.kind picks the tokenizer either way).
    c.image_tokenizer = ""
    return c


def check_real_data(d: ConfigDict, _: ConfigDict):
    if d.source in registry.DATA_SOURCES:
        # The keys only this source reads. data.path / data.images_dir are needed to build only (reading a built
        # dataset needs data.data_dir): dalle.data.build raises naming them (DataSource.build_needs).
        yield from sources_lib.get(d.source).errors(d)
    else:
        yield (f"data.source = {d.source!r} is not a registered data source "
               f"(known: {', '.join(registry.DATA_SOURCES.names())})")
    if d.image_size < 0:
        yield f"data.image_size = {d.image_size} must be positive"
    if not 0.0 <= d.validation_fraction < 1.0:
        yield f"data.validation_fraction = {d.validation_fraction} must be in [0, 1)"
    for key in ("blank_caption_prob", "caption_word_dropout", "caption_unknown_word_prob", "caption_swap_prob"):
        if not 0.0 <= d[key] <= 1.0:
            yield f"data.{key} = {d[key]} must be in [0, 1]"
    if d.caption_word_dropout >= 1.0:
        yield f"data.caption_word_dropout = {d.caption_word_dropout} must be < 1 (it would drop every word)"
    if d.max_text_length <= 0:
        yield f"data.max_text_length = {d.max_text_length} must be positive"
    if d.get("image_tokenizer", ""):
        if d.image_tokenizer not in registry.IMAGE_TOKENIZERS:
            yield (f"data.image_tokenizer = {d.image_tokenizer!r} is not a registered image tokenizer (known: "
                   f"{', '.join(registry.IMAGE_TOKENIZERS.names())})")
    if d.get("unknown_words", "keep") not in UNKNOWN_WORDS:
        yield f"data.unknown_words = {d.unknown_words!r} is not one of {', '.join(UNKNOWN_WORDS)}"
    if d.text_normalizer not in TEXT_NORMALIZERS:
        yield f"data.text_normalizer = {d.text_normalizer!r} is not one of {', '.join(TEXT_NORMALIZERS)}"
    if d.vocab_size < 4:
        yield f"data.vocab_size = {d.vocab_size} must be at least 4 (pad, eos, unk and one piece)"
    if d.tokenizer_model_type not in ("unigram", "bpe", "word", "char"):
        yield f"data.tokenizer_model_type = {d.tokenizer_model_type!r} is not one of unigram, bpe, word, char"
    if d.encoded_format not in ENCODED_FORMATS:
        yield f"data.encoded_format = {d.encoded_format!r} is not one of {ENCODED_FORMATS}"
    if d.encode_batch_size <= 0 or d.examples_per_shard <= 0:
        yield (f"data.encode_batch_size = {d.encode_batch_size} and data.examples_per_shard = "
               f"{d.examples_per_shard} must be positive")
    for entry in d.mixture:
        where, sep, rate = str(entry).rpartition(":")
        try:
            ok = bool(sep and where) and float(rate) > 0
        except ValueError:
            ok = False
        if not ok:
            yield f"data.mixture entry {entry!r} must be 'encoded_dir:rate' with a positive rate"


def _merge_real_data_schema() -> None:
    registered = dict(config_lib.SCHEMAS.get("data", {}))  # compose with the shapes schema above
    if not registered:
        registered = {None: config_lib.Schema(ConfigDict, None)}
    for kind, base in registered.items():
        def defaults(base=base) -> ConfigDict:
            c = base.defaults()
            extra = real_data_defaults()
            with c.unlocked():
                for key in extra.keys():
                    if key not in c:
                        c[key] = extra[key]
                for key, value in sources_lib.source_defaults().items():
                    if key not in c:
                        c[key] = value
                c.image_size = extra.image_size  # no silent size: check_data fills only the shapes world's
            return c

        def check(d: ConfigDict, whole: ConfigDict, base=base):
            if base.check is not None:
                yield from base.check(d, whole)
            yield from check_real_data(d, whole)

        config_lib.register_schema("data", defaults, check, kind=kind)


_merge_real_data_schema()
