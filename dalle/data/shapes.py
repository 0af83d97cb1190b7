"""Captioned shapes: a procedural text-to-image world small enough for a 2-core CPU and exactly measurable.

Each image shows 1-3 objects (shape, color, size) centered in distinct cells of a 3x3 grid on a plain background.
Every example is a pure function of (seed, split, index): `ShapesWorld.scene` draws the scene spec, `render`
draws it, `caption` describes it. Nothing is stored, so any example can be re-made from its index (exact resume
for free), and `dalle.eval.analyzer` can read scenes back from pixels to score generated images.

Held-out color-shape pairs and relations (config `data.held_out_pairs`, `data.held_out_relations`) never occur in
`train` or `validation`; the `zero_shot` split is made only of scenes that contain one of them.

    world = ShapesWorld.from_config(config.data)
    scene = world.scene("train", 123)
    image = world.render(scene)                 # uint8 [H, W, 3]
    text = world.caption(scene, np.random.default_rng(0))
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw

from dalle.data import schema as S

SPLITS = ("train", "validation", "zero_shot")
_SPLIT_IDS = {name: i for i, name in enumerate(SPLITS)}
GRID = 3
CELL_NAMES = ("top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right")


# ------------------------------------------------------------------------------------------------------------
# Scene spec
# ------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ShapeObject:
    """One object; `cell` is row-major in the 3x3 grid (0 = top left, 4 = center, 8 = bottom right)."""

    color: str
    shape: str
    size: str
    cell: int

    @property
    def row(self) -> int:
        return self.cell // GRID

    @property
    def col(self) -> int:
        return self.cell % GRID


@dataclasses.dataclass(frozen=True)
class Scene:
    """The spec stored with every example. `tag` names the held-out combination a zero_shot scene contains."""

    objects: tuple[ShapeObject, ...]
    background: str = "black"
    tag: str = ""

    def to_json(self) -> str:
        return json.dumps({"objects": [dataclasses.asdict(o) for o in self.objects],
                           "background": self.background, "tag": self.tag}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes | Mapping[str, Any]) -> "Scene":
        d = json.loads(text) if isinstance(text, (str, bytes)) else dict(text)
        return cls(objects=tuple(ShapeObject(**o) for o in d["objects"]), background=d.get("background", "black"),
                   tag=d.get("tag", ""))


@dataclasses.dataclass(frozen=True)
class RequestedObject:
    """What a caption asks for about one object; None = not said (any value matches)."""

    color: str | None
    shape: str | None
    size: str | None = None
    cell: int | None = None


@dataclasses.dataclass(frozen=True)
class Request:
    """Everything a caption states: its objects, relations (subject index, relation, object index), background."""

    objects: tuple[RequestedObject, ...]
    relations: tuple[tuple[int, str, int], ...] = ()
    background: str | None = None

    def to_json(self) -> str:
        return json.dumps({"objects": [dataclasses.asdict(o) for o in self.objects],
                           "relations": [list(r) for r in self.relations], "background": self.background},
                          sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> "Request":
        d = json.loads(text)
        return cls(objects=tuple(RequestedObject(**o) for o in d["objects"]),
                   relations=tuple((int(a), str(r), int(b)) for a, r, b in d["relations"]),
                   background=d.get("background"))

    @classmethod
    def from_scene(cls, scene: Scene) -> "Request":
        """A request that pins every attribute of every object (the strict comparison)."""
        return cls(objects=tuple(RequestedObject(o.color, o.shape, o.size, o.cell) for o in scene.objects),
                   background=scene.background)


@dataclasses.dataclass(frozen=True)
class Caption:
    text: str
    request: Request


def relation_holds(a_cell: int, relation: str, b_cell: int) -> bool:
    """`left_of`: a's column is left of b's (any row); `above`: a's row is above b's (any column)."""
    ar, ac, br, bc = a_cell // GRID, a_cell % GRID, b_cell // GRID, b_cell % GRID
    if relation == "left_of":
        return ac < bc
    if relation == "right_of":
        return ac > bc
    if relation == "above":
        return ar < br
    if relation == "below":
        return ar > br
    raise ValueError(f"unknown relation {relation!r} (known: {S.RELATIONS})")


# ------------------------------------------------------------------------------------------------------------
# Shapes, in unit coordinates: the object's box is [-1, 1]^2, y pointing down.
# ------------------------------------------------------------------------------------------------------------
def _regular(n: int, radius: float = 1.0, start: float = -90.0) -> list[tuple[float, float]]:
    return [(radius * math.cos(math.radians(start + 360.0 * k / n)),
             radius * math.sin(math.radians(start + 360.0 * k / n))) for k in range(n)]


def _star() -> list[tuple[float, float]]:
    outer, inner = _regular(5, 1.0), _regular(5, 0.42, -90.0 + 36.0)
    pts = [p for pair in zip(outer, inner) for p in pair]
    return [(x, y + 0.1) for x, y in pts]  # the star's mass sits high; center its box


def _heart() -> list[tuple[float, float]]:
    t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    x, y = x / 16.0, (y - (y.max() + y.min()) / 2) / ((y.max() - y.min()) / 2)
    return list(zip(x.tolist(), y.tolist()))


_POLYGONS: dict[str, list[tuple[float, float]]] = {
    "square": [(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)],
    "triangle": [(0.0, -0.95), (1.0, 0.8), (-1.0, 0.8)],
    "star": _star(),
    "cross": [(-0.3, -0.95), (0.3, -0.95), (0.3, -0.3), (0.95, -0.3), (0.95, 0.3), (0.3, 0.3), (0.3, 0.95),
              (-0.3, 0.95), (-0.3, 0.3), (-0.95, 0.3), (-0.95, -0.3), (-0.3, -0.3)],
    "diamond": [(0.0, -1.0), (0.75, 0.0), (0.0, 1.0), (-0.75, 0.0)],
    "heart": _heart(),
    "hexagon": _regular(6, 1.0, 0.0),
}


def _draw_unit_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, rx: float, ry: float) -> None:
    """Draws `shape` filled with 255, its unit box mapped to [cx-rx, cx+rx] x [cy-ry, cy+ry]."""
    if shape == "circle":
        draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=255)
    elif shape == "crescent":
        draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=255)
        ox, oy, r = 0.45, -0.2, 0.85
        draw.ellipse([cx + (ox - r) * rx, cy + (oy - r) * ry, cx + (ox + r) * rx, cy + (oy + r) * ry], fill=0)
    elif shape in _POLYGONS:
        draw.polygon([(cx + x * rx, cy + y * ry) for x, y in _POLYGONS[shape]], fill=255)
    else:
        raise ValueError(f"unknown shape {shape!r} (known: {S.SHAPE_NAMES})")


def cell_bounds(cell: int, height: int, width: int) -> tuple[int, int, int, int]:
    """Integer pixel box (y0, y1, x0, x1) of a grid cell in an image of this size."""
    r, c = cell // GRID, cell % GRID
    return (round(r * height / GRID), round((r + 1) * height / GRID),
            round(c * width / GRID), round((c + 1) * width / GRID))


def object_alpha(shape: str, size: str, cell: int, height: int, width: int,
                 supersample: int = 4) -> tuple[int, int, np.ndarray]:
    """Antialiased coverage of one object: (y0, x0, alpha float32 [h, w] in [0, 1]) placed at (y0, x0).

    Drawn `supersample` times larger with PIL and reduced with bicubic, as a whole image would be: resizing is
    linear, so compositing these masks equals drawing all objects at once and reducing the result."""
    frac = S.SIZE_FRACTIONS[size]
    r, c = cell // GRID, cell % GRID
    cy, cx = (r + 0.5) * height / GRID, (c + 0.5) * width / GRID
    ry, rx = frac * height / GRID / 2, frac * width / GRID / 2
    pad = 3  # output pixels of zeros around the object: the bicubic kernel reaches 2
    y0, y1 = max(0, math.floor(cy - ry) - pad), min(height, math.ceil(cy + ry) + pad)
    x0, x1 = max(0, math.floor(cx - rx) - pad), min(width, math.ceil(cx + rx) + pad)
    s = supersample
    canvas = Image.new("L", ((x1 - x0) * s, (y1 - y0) * s), 0)
    _draw_unit_shape(ImageDraw.Draw(canvas), shape, (cx - x0) * s, (cy - y0) * s, rx * s, ry * s)
    small = canvas.convert("F").resize((x1 - x0, y1 - y0), Image.BICUBIC) if s > 1 else canvas.convert("F")
    alpha = np.clip(np.asarray(small, dtype=np.float32) / 255.0, 0.0, 1.0)
    return y0, x0, alpha


# ------------------------------------------------------------------------------------------------------------
# The world
# ------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Descriptor:
    color: str | None
    shape: str

    def matches(self, o: ShapeObject) -> bool:
        return o.shape == self.shape and (self.color is None or o.color == self.color)

    def __str__(self) -> str:
        return f"{self.color} {self.shape}" if self.color else self.shape


_D = S.data_defaults()


class ShapesWorld:
    """Scene sampling, rendering and captions for one `data` config; see the module docstring."""

    def __init__(self, image_size: int = _D.image_size, min_objects: int = _D.min_objects,
                 max_objects: int = _D.max_objects, colors: Sequence[str] = _D.colors,
                 shapes: Sequence[str] = _D.shapes, sizes: Sequence[str] = _D.sizes,
                 backgrounds: Sequence[str] = _D.backgrounds, same_kind_prob: float = _D.same_kind_prob,
                 relation_prob: float = _D.relation_prob, held_out_pairs: Sequence[str] = _D.held_out_pairs,
                 held_out_relations: Sequence[str] = _D.held_out_relations, seed: int = _D.seed,
                 supersample: int = _D.supersample):
        """Defaults are those of the `data` config schema; invalid values raise ValueError naming the key."""
        cfg = S.data_defaults()
        for key, value in dict(image_size=image_size, min_objects=min_objects, max_objects=max_objects,
                               colors=tuple(colors), shapes=tuple(shapes), sizes=tuple(sizes),
                               backgrounds=tuple(backgrounds), same_kind_prob=float(same_kind_prob),
                               relation_prob=float(relation_prob), held_out_pairs=tuple(held_out_pairs),
                               held_out_relations=tuple(held_out_relations),
                               seed=seed, supersample=supersample).items():
            cfg[key] = value
        errors = [*S.check_data(cfg, cfg), *S.check_shapes_world(cfg)]
        if errors:
            raise ValueError("invalid shapes world:\n  " + "\n  ".join(errors))
        self.image_size, self.min_objects, self.max_objects = image_size, min_objects, max_objects
        self.colors, self.shapes, self.sizes = tuple(colors), tuple(shapes), tuple(sizes)
        self.backgrounds = tuple(backgrounds)
        self.same_kind_prob, self.seed, self.supersample = float(same_kind_prob), int(seed), int(supersample)
        self.relation_prob = float(relation_prob)
        self.held_out_pairs = tuple(_Descriptor(*S.parse_object_descriptor(p.split())) for p in held_out_pairs)
        self.held_out_relations = tuple(
            (_Descriptor(*a), rel, _Descriptor(*b)) for a, rel, b in map(S.parse_relation, held_out_relations))
        # Colors usable on each background (never an object the background hides).
        self.colors_on = {bg: tuple(c for c in self.colors
                                    if _dist(S.COLOR_PALETTE[c], S.BACKGROUND_PALETTE[bg]) >= S.MIN_CONTRAST)
                          for bg in self.backgrounds}
        self._alpha_cache: dict[tuple, tuple[int, int, np.ndarray]] = {}
        self._zero_shot = [("pair", p) for p in self.held_out_pairs]
        if max_objects >= 2:
            self._zero_shot += [("relation", r) for r in self.held_out_relations]

    @classmethod
    def from_config(cls, data: Mapping[str, Any]) -> "ShapesWorld":
        """From a validated `data` config section (ConfigDict or dict); other keys are ignored."""
        keys = ("image_size", "min_objects", "max_objects", "colors", "shapes", "sizes", "backgrounds",
                "same_kind_prob", "relation_prob", "held_out_pairs", "held_out_relations", "seed", "supersample")
        defaults = S.data_defaults()
        return cls(**{k: (data[k] if k in data else defaults[k]) for k in keys})

    def config_dict(self) -> dict[str, Any]:
        """The parameters that define the world (for builder config names and stored metadata)."""
        return dict(image_size=self.image_size, min_objects=self.min_objects, max_objects=self.max_objects,
                    colors=list(self.colors), shapes=list(self.shapes), sizes=list(self.sizes),
                    backgrounds=list(self.backgrounds), same_kind_prob=self.same_kind_prob,
                    relation_prob=self.relation_prob, held_out_pairs=[str(p) for p in self.held_out_pairs],
                    held_out_relations=[f"{a} {r} {b}" for a, r, b in self.held_out_relations],
                    seed=self.seed, supersample=self.supersample)

    # --- sampling ---------------------------------------------------------------------------------------------
    def rng(self, split: str, index: int, stream: int = 0) -> np.random.Generator:
        if split not in _SPLIT_IDS:
            raise ValueError(f"split {split!r} is not one of {SPLITS}")
        if index < 0:
            raise ValueError(f"index {index} must be >= 0")
        return np.random.default_rng([self.seed, _SPLIT_IDS[split], int(index), stream])

    def held_out_in(self, scene: Scene) -> list[str]:
        """Names of the held-out combinations this scene contains (empty for every train/validation scene)."""
        found = [f"pair:{p}" for p in self.held_out_pairs if any(p.matches(o) for o in scene.objects)]
        for a, rel, b in self.held_out_relations:
            if any(a.matches(x) and b.matches(y) and relation_holds(x.cell, rel, y.cell)
                   for i, x in enumerate(scene.objects) for j, y in enumerate(scene.objects) if i != j):
                found.append(f"relation:{a} {rel} {b}")
        return found

    def _random_object(self, rng: np.random.Generator, colors: Sequence[str], cell: int) -> ShapeObject:
        return ShapeObject(colors[rng.integers(len(colors))], self.shapes[rng.integers(len(self.shapes))],
                           self.sizes[rng.integers(len(self.sizes))], cell)

    def _fill(self, rng: np.random.Generator, fixed: list[ShapeObject], n: int, colors: Sequence[str]
              ) -> list[ShapeObject]:
        objects = list(fixed)
        free = [c for c in rng.permutation(GRID * GRID).tolist() if c not in {o.cell for o in objects}]
        while len(objects) < n:
            cell = free.pop()
            if objects and rng.random() < self.same_kind_prob:
                src = objects[rng.integers(len(objects))]
                size = self.sizes[rng.integers(len(self.sizes))]
                objects.append(ShapeObject(src.color, src.shape, size, cell))
            else:
                objects.append(self._random_object(rng, colors, cell))
        return objects

    def scene(self, split: str, index: int) -> Scene:
        """The scene of example `index` of `split`; a pure function of (seed, split, index)."""
        rng = self.rng(split, index)
        if split == "zero_shot":
            return self._zero_shot_scene(rng)
        for _ in range(1000):
            bg = self.backgrounds[rng.integers(len(self.backgrounds))]
            n = int(rng.integers(self.min_objects, self.max_objects + 1))
            objects = self._fill(rng, [], n, self.colors_on[bg])
            scene = Scene(tuple(sorted(objects, key=lambda o: o.cell)), bg)
            if not self.held_out_in(scene):
                return scene
        raise RuntimeError("could not draw a scene without a held-out combination: too much is held out")

    def _zero_shot_scene(self, rng: np.random.Generator) -> Scene:
        if not self._zero_shot:
            raise ValueError("the zero_shot split is empty: data.held_out_pairs (and, with max_objects >= 2, "
                             "data.held_out_relations) are empty")
        kind, combo = self._zero_shot[rng.integers(len(self._zero_shot))]
        for _ in range(1000):
            bg = self.backgrounds[rng.integers(len(self.backgrounds))]
            colors = self.colors_on[bg]
            if kind == "pair":
                if combo.color not in colors:
                    continue
                n = int(rng.integers(self.min_objects, self.max_objects + 1))
                cell = int(rng.integers(GRID * GRID))
                fixed = [ShapeObject(combo.color, combo.shape, self.sizes[rng.integers(len(self.sizes))], cell)]
                tag = f"pair:{combo}"
            else:
                a, rel, b = combo
                n = int(rng.integers(max(2, self.min_objects), self.max_objects + 1))
                ca, cb = rng.choice(GRID * GRID, size=2, replace=False).tolist()
                if not relation_holds(ca, rel, cb) or any(d.color not in (None, *colors) for d in (a, b)):
                    continue
                fixed = [ShapeObject(d.color or colors[rng.integers(len(colors))], d.shape,
                                     self.sizes[rng.integers(len(self.sizes))], cell)
                         for d, cell in ((a, ca), (b, cb))]
                tag = f"relation:{a} {rel} {b}"
            objects = self._fill(rng, fixed, n, colors)
            return Scene(tuple(sorted(objects, key=lambda o: o.cell)), bg, tag)
        raise RuntimeError(f"could not place held-out combination {combo} on any background")

    # --- rendering --------------------------------------------------------------------------------------------
    def alpha(self, shape: str, size: str, cell: int, height: int | None = None, width: int | None = None
              ) -> tuple[int, int, np.ndarray]:
        """Cached `object_alpha` (the renderer's only drawing step: a scene is composited from these)."""
        key = (shape, size, cell, height or self.image_size, width or height or self.image_size)
        hit = self._alpha_cache.get(key)
        if hit is None:
            y0, x0, a = object_alpha(shape, size, cell, key[3], key[4], self.supersample)
            a.setflags(write=False)
            hit = self._alpha_cache[key] = (y0, x0, a)
        return hit

    def render(self, scene: Scene, out: np.ndarray | None = None) -> np.ndarray:
        """uint8 [H, W, 3]: the background plus each object's antialiased coverage times its color."""
        h = w = self.image_size
        bg = np.asarray(S.BACKGROUND_PALETTE[scene.background], np.float32)
        img = np.empty((h, w, 3), np.float32)
        img[...] = bg
        for o in scene.objects:
            y0, x0, a = self.alpha(o.shape, o.size, o.cell)
            delta = np.asarray(S.COLOR_PALETTE[o.color], np.float32) - bg
            img[y0:y0 + a.shape[0], x0:x0 + a.shape[1]] += a[..., None] * delta
        np.rint(img, out=img)
        np.clip(img, 0, 255, out=img)
        if out is None:
            return img.astype(np.uint8)
        out[...] = img
        return out

    # --- captions ---------------------------------------------------------------------------------------------
    def describe(self, scene: Scene, rng: np.random.Generator) -> Caption:
        """A caption with varied wording plus the `Request` it makes (what an image must show to match it)."""
        return _describe(scene, rng, self.relation_prob)

    def caption(self, scene: Scene, rng: np.random.Generator) -> str:
        return _describe(scene, rng, self.relation_prob).text

    def example(self, split: str, index: int) -> dict[str, Any]:
        """One example: image, caption, spec (scene JSON), request (caption JSON), index."""
        scene = self.scene(split, index)
        cap = _describe(scene, self.rng(split, index, stream=1), self.relation_prob)
        return {"image": self.render(scene), "caption": cap.text, "spec": scene.to_json(),
                "request": cap.request.to_json(), "index": int(index)}


def _dist(a: Sequence[float], b: Sequence[float]) -> float:
    return float(sum((x - y) ** 2 for x, y in zip(a, b)) ** 0.5)


# ------------------------------------------------------------------------------------------------------------
# Captions
# ------------------------------------------------------------------------------------------------------------
_SHAPE_WORDS = {  # singular, plural
    "circle": [("circle", "circles"), ("disk", "disks"), ("round dot", "round dots")],
    "square": [("square", "squares"), ("box", "boxes")],
    "triangle": [("triangle", "triangles")],
    "star": [("star", "stars")],
    "cross": [("cross", "crosses"), ("plus sign", "plus signs"), ("plus", "pluses")],
    "diamond": [("diamond", "diamonds"), ("rhombus", "rhombuses")],
    "heart": [("heart", "hearts")],
    "hexagon": [("hexagon", "hexagons")],
    "crescent": [("crescent", "crescents"), ("moon", "moons")],
}
_COLOR_WORDS = {"purple": ["purple", "violet"], "cyan": ["cyan", "turquoise"], "gray": ["gray", "grey"]}
_SIZE_WORDS = {"small": ["small", "little", "tiny"], "medium": ["medium", "medium-sized"],
               "large": ["large", "big"]}
_CELL_WORDS = {
    0: ["top left", "upper left", "top left corner"], 1: ["top", "top middle", "top center"],
    2: ["top right", "upper right", "top right corner"], 3: ["left", "middle left", "center left"],
    4: ["center", "middle", "centre"], 5: ["right", "middle right", "center right"],
    6: ["bottom left", "lower left", "bottom left corner"], 7: ["bottom", "bottom middle", "bottom center"],
    8: ["bottom right", "lower right", "bottom right corner"],
}
_REL_WORDS = {"left_of": ["to the left of", "left of"], "right_of": ["to the right of", "right of"],
              "above": ["above", "over"], "below": ["below", "under", "beneath"]}
_COUNT_WORDS = {2: ["two", "2"], 3: ["three", "3"]}


def _pick(rng: np.random.Generator, options: Sequence[Any]) -> Any:
    return options[rng.integers(len(options))]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _noun_phrase(rng, color: str, shape: str, size: str | None, count: int = 1, article: bool = True) -> str:
    words = ([_pick(rng, _SIZE_WORDS[size])] if size else []) + [_pick(rng, _COLOR_WORDS.get(color, [color]))]
    noun = _pick(rng, _SHAPE_WORDS[shape])[0 if count == 1 else 1]
    phrase = " ".join(words + [noun])
    if count > 1:
        return f"{_pick(rng, _COUNT_WORDS[count])} {phrase}"
    return f"{_article(phrase)} {phrase}" if article else phrase


def _place(rng, cell: int) -> str:
    where = _pick(rng, _CELL_WORDS[cell])
    return f"{_pick(rng, ['in the', 'at the', 'on the'] if cell != 4 else ['in the'])} {where}"


_SAY_POSITION_PROB = 0.6  # chance that a caption places its objects (cells or a relation)


def _states_relation(rng: np.random.Generator, say_pos: bool, relation_prob: float) -> bool:
    """Whether a two-object caption states a relation, with overall chance `relation_prob`.

    Relations come from the captions that place their objects and reach into the others only when
    `relation_prob` exceeds their share: below that, each caption draws the same random numbers at any
    `relation_prob`, so the default world's captions are those it had before the knob existed. Captions that
    must place their objects (a held-out relation's zero_shot scenes) state it at relation_prob / 0.6."""
    if say_pos:
        return rng.random() < min(1.0, relation_prob / _SAY_POSITION_PROB)
    extra = (relation_prob - _SAY_POSITION_PROB) / (1.0 - _SAY_POSITION_PROB)
    return extra > 0 and rng.random() < extra


def _describe(scene: Scene, rng: np.random.Generator, relation_prob: float = _D.relation_prob) -> Caption:
    objs = scene.objects
    n = len(objs)
    say_size = rng.random() < 0.6
    say_bg = rng.random() < 0.25
    forced_position = scene.tag.startswith("relation:")
    say_pos = forced_position or rng.random() < _SAY_POSITION_PROB
    requested: list[RequestedObject] = []
    relations: list[tuple[int, str, int]] = []
    if n == 2 and (objs[0].color, objs[0].shape) != (objs[1].color, objs[1].shape) \
            and _states_relation(rng, say_pos, relation_prob):
        # Relation: "a blue square to the left of a yellow star".
        i, j = (0, 1) if rng.random() < 0.5 else (1, 0)
        a, b = objs[i], objs[j]
        rel = _pick(rng, [r for r in S.RELATIONS if relation_holds(a.cell, r, b.cell)])
        sa, sb = (a.size, b.size) if say_size else (None, None)
        pa, pb = _noun_phrase(rng, a.color, a.shape, sa), _noun_phrase(rng, b.color, b.shape, sb)
        rel_words = _pick(rng, _REL_WORDS[rel])
        body = _pick(rng, [f"{pa} {rel_words} {pb}", f"{pa} placed {rel_words} {pb}"])
        requested = [RequestedObject(a.color, a.shape, sa), RequestedObject(b.color, b.shape, sb)]
        relations = [(0, rel, 1)]
    else:
        # Groups of same color+shape, counted: "two green triangles and a small red circle in the top left".
        groups: dict[tuple[str, str], list[ShapeObject]] = {}
        for o in objs:
            groups.setdefault((o.color, o.shape), []).append(o)
        order = list(groups)
        order = [order[k] for k in rng.permutation(len(order))]
        parts = []
        for key in order:
            members = groups[key]
            sizes = {m.size for m in members}
            size = members[0].size if say_size and len(sizes) == 1 else None
            phrase = _noun_phrase(rng, key[0], key[1], size, count=len(members))
            if say_pos and len(members) == 1:
                phrase += " " + _place(rng, members[0].cell)
                requested.append(RequestedObject(key[0], key[1], size, members[0].cell))
            elif say_pos:
                places = [_pick(rng, _CELL_WORDS[m.cell]) for m in members]
                phrase += f" {_pick(rng, ['in the', 'at the'])} " + " and ".join(places)
                requested += [RequestedObject(key[0], key[1], size, m.cell) for m in members]
            else:
                requested += [RequestedObject(key[0], key[1], size) for _ in members]
            parts.append(phrase)
        body = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    if say_bg:
        bgw = _COLOR_WORDS.get(scene.background, [scene.background])
        body += _pick(rng, [" on a {} background", " against a {} background", ", {} background"]).format(
            _pick(rng, bgw))
    lead = _pick(rng, ["", "", "", "a picture of ", "an image of ", "there is ", "a drawing of "])
    if lead == "there is " and body.split(" ", 1)[0] in ("two", "three", "2", "3"):
        lead = "there are "
    return Caption(lead + body, Request(tuple(requested), tuple(relations),
                                        scene.background if say_bg else None))


# ------------------------------------------------------------------------------------------------------------
# Batches
# ------------------------------------------------------------------------------------------------------------
class ShapesIterator:
    """Host-local batches of a split, deterministic by example index, position saved/restored exactly.

    Row r of global batch k on process p is example `k * batch_size + p * local + r` (local = batch_size /
    process_count), so every process renders only its own rows and the union over processes is the global batch.
    `num_examples` None streams indices without end (train); otherwise one pass over [0, num_examples), the
    last incomplete global batch dropped (static shapes for jit), unless `repeat`.
    Yields {"image": uint8 [B, H, W, 3], "caption": object [B], "spec": object [B] (Scene JSON),
    "request": object [B] (caption Request JSON), "index": int64 [B]}.
    """

    def __init__(self, world: ShapesWorld, split: str, batch_size: int, process_index: int = 0,
                 process_count: int = 1, num_examples: int | None = None, repeat: bool = False):
        if split not in SPLITS:
            raise ValueError(f"split {split!r} is not one of {SPLITS}")
        if batch_size <= 0 or batch_size % process_count:
            raise ValueError(f"batch_size = {batch_size} must be a positive multiple of process_count = "
                             f"{process_count}")
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index = {process_index} not in [0, {process_count})")
        if num_examples is not None and num_examples < batch_size:
            raise ValueError(f"num_examples = {num_examples} is smaller than one batch ({batch_size})")
        self.world, self.split, self.batch_size = world, split, batch_size
        self.process_index, self.process_count = process_index, process_count
        self.local = batch_size // process_count
        self.num_examples, self.repeat = num_examples, repeat
        self.step = 0

    def _batches_per_epoch(self) -> int | None:
        return None if self.num_examples is None else self.num_examples // self.batch_size

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        per_epoch = self._batches_per_epoch()
        if per_epoch is not None and self.step >= per_epoch and not self.repeat:
            raise StopIteration
        k = self.step if per_epoch is None else self.step % per_epoch
        first = k * self.batch_size + self.process_index * self.local
        batch = self.batch(range(first, first + self.local))
        self.step += 1
        return batch

    def batch(self, indices: Sequence[int]) -> dict[str, np.ndarray]:
        n, size = len(indices), self.world.image_size
        images = np.empty((n, size, size, 3), np.uint8)
        captions, specs, requests = np.empty(n, object), np.empty(n, object), np.empty(n, object)
        for r, i in enumerate(indices):
            scene = self.world.scene(self.split, i)
            self.world.render(scene, out=images[r])
            cap = _describe(scene, self.world.rng(self.split, i, stream=1), self.world.relation_prob)
            captions[r], specs[r], requests[r] = cap.text, scene.to_json(), cap.request.to_json()
        return {"image": images, "caption": captions, "spec": specs, "request": requests,
                "index": np.asarray(indices, np.int64)}

    def get_state(self) -> dict:
        return {"split": self.split, "seed": self.world.seed, "step": self.step, "batch_size": self.batch_size}

    def set_state(self, state: dict) -> None:
        for key in ("split", "seed", "batch_size"):
            mine = getattr(self, key) if key != "seed" else self.world.seed
            if key in state and state[key] != mine:
                raise ValueError(f"data state {key} = {state[key]!r} does not match this iterator's {mine!r}")
        self.step = int(state["step"])


def make_iterator(data: Mapping[str, Any], split: str, batch_size: int, process_index: int = 0,
                  process_count: int = 1, num_examples: int | None = None, repeat: bool = False) -> ShapesIterator:
    """Iterator over a split of the world a `data` config section describes (what Task.train_data returns)."""
    return ShapesIterator(ShapesWorld.from_config(data), split, batch_size, process_index, process_count,
                          num_examples, repeat)
