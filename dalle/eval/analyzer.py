"""Exact scene analyzer for the captioned-shapes world: reads objects back from pixels to score images.

Per grid cell (objects sit centered in distinct cells of a 3x3 grid):
  1. background = per-channel median of the image (objects cover < 30 % of it), snapped to the world's palette;
  2. a cell holds an object when its interior has a pixel far from the background and enough coverage mass;
  3. color = the palette color whose background-to-color segment passes nearest the object's core pixels;
  4. coverage alpha per pixel = projection of (pixel - background) on (color - background), clipped to [0, 1];
  5. (shape, size) = nearest template in L2 among the world's own renders of every (shape, size) in that cell,
     each scaled to peak 1, also blurred (sigma up to 1.5 px at 32 px) and shifted by up to ~1/32 of the image,
     so that faded, blurred or slightly shifted objects (VQGAN round trips, samples) still read right. The
     templates come from the renderer itself (nothing downloaded, fully deterministic).
Images above 64 px are box-reduced to 64 px first (templates too): the shapes are unambiguous there and
template matching stays cheap.

    found = analyze(image, world)                  # [DetectedObject(color, shape, size, cell, ...)]
    result = matches(found, scene_or_request)      # {"color": .., "shape": .., ..., "all": ..}
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image
from scipy import ndimage

from dalle.data import schema as S
from dalle.data.shapes import GRID, Request, RequestedObject, Scene, ShapesWorld, cell_bounds, relation_holds

ANALYSIS_SIZE = 64  # larger images are reduced to this many pixels before analysis
_BLURS = (0.0, 0.5, 1.0, 1.5)  # template blur levels, in pixels of a 32 px image (scaled with the size)


@dataclasses.dataclass(frozen=True)
class DetectedObject:
    """One object read from an image. `fit` is the template's mean squared alpha error (0 = exact)."""

    color: str
    shape: str
    size: str
    cell: int
    fit: float = 0.0
    color_distance: float = 0.0


@dataclasses.dataclass
class _CellBank:
    templates: np.ndarray  # float32 [K, h, w]
    labels: list[tuple[str, str]]  # (shape, size) per template
    min_mass: float  # smallest un-blurred template mass inside the cell


class Analyzer:
    """Holds the template banks of one world, per image size (built on first use, then reused)."""

    def __init__(self, world: ShapesWorld):
        self.world = world
        self._banks: dict[tuple[int, int], list[_CellBank]] = {}
        self._palette = np.asarray([S.COLOR_PALETTE[c] for c in world.colors], np.float32)
        self._backgrounds = np.asarray([S.BACKGROUND_PALETTE[b] for b in world.backgrounds], np.float32)
        self._min_contrast = min(
            float(np.linalg.norm(np.asarray(S.COLOR_PALETTE[c], np.float32) - S.BACKGROUND_PALETTE[b]))
            for b in world.backgrounds for c in world.colors_on[b])

    # --- templates --------------------------------------------------------------------------------------------
    def _bank(self, height: int, width: int) -> list[_CellBank]:
        key = (height, width)
        if key not in self._banks:
            self._banks[key] = self._build_bank(height, width)
        return self._banks[key]

    def _build_bank(self, height: int, width: int) -> list[_CellBank]:
        ah, aw = _analysis_shape(height, width)
        shift = max(1, round(ah / 32))
        scale = ah / 32
        banks = []
        for cell in range(GRID * GRID):
            y0, y1, x0, x1 = cell_bounds(cell, ah, aw)
            templates, labels, masses = [], [], []
            for shape, size in itertools.product(self.world.shapes, self.world.sizes):
                oy, ox, a = self.world.alpha(shape, size, cell, height, width)
                full = np.zeros((height, width), np.float32)
                full[oy:oy + a.shape[0], ox:ox + a.shape[1]] = a
                full = _reduce(full[..., None], ah, aw)[..., 0]
                masses.append(float(full[y0:y1, x0:x1].sum()))
                for sigma in _BLURS:
                    blurred = ndimage.gaussian_filter(full, sigma * scale, mode="constant") if sigma else full
                    padded = np.pad(blurred, shift)
                    for dy in range(-shift, shift + 1):
                        for dx in range(-shift, shift + 1):
                            # Content moved by (dy, dx): window starts at (y0 - dy, x0 - dx) in the unpadded image.
                            ys, xs = y0 - dy + shift, x0 - dx + shift
                            window = padded[ys:ys + (y1 - y0), xs:xs + (x1 - x0)]
                            templates.append(window / max(float(window.max()), 1e-3))
                            labels.append((shape, size))
            banks.append(_CellBank(np.stack(templates).astype(np.float32), labels, min(masses)))
        return banks

    # --- analysis ---------------------------------------------------------------------------------------------
    def background(self, image: np.ndarray) -> tuple[str, np.ndarray]:
        """(nearest palette background name, background RGB used for analysis)."""
        med = np.median(image.reshape(-1, 3), axis=0).astype(np.float32)
        dist = np.linalg.norm(self._backgrounds - med, axis=1)
        k = int(np.argmin(dist))
        name = self.world.backgrounds[k]
        return name, (self._backgrounds[k] if dist[k] < 60.0 else med)

    def analyze_scene(self, image: np.ndarray) -> Scene:
        """The image read back as a Scene (objects sorted by cell)."""
        bg_name, objects = self._analyze(image)
        return Scene(tuple(_to_object(o) for o in objects), bg_name)

    def analyze(self, image: np.ndarray) -> list[DetectedObject]:
        return self._analyze(image)[1]

    def _analyze(self, image: np.ndarray) -> tuple[str, list[DetectedObject]]:
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image must be [H, W, 3], got shape {image.shape}")
        height, width = image.shape[:2]
        banks = self._bank(height, width)
        ah, aw = _analysis_shape(height, width)
        img = _reduce(image.astype(np.float32), ah, aw)
        bg_name, bg = self.background(img)
        colors = self.world.colors_on.get(bg_name, self.world.colors)
        palette = np.asarray([S.COLOR_PALETTE[c] for c in colors], np.float32)
        diff = img - bg
        strength = np.linalg.norm(diff, axis=-1)
        margin = max(1, round(ah / 32))
        found = []
        for cell in range(GRID * GRID):
            y0, y1, x0, x1 = cell_bounds(cell, ah, aw)
            s = strength[y0:y1, x0:x1]
            inner = s[margin:-margin, margin:-margin]
            smax = float(inner.max())
            if smax < 0.45 * self._min_contrast:
                continue
            d = diff[y0:y1, x0:x1]
            core = s >= 0.7 * smax
            w = s[core]
            m = (d[core] * w[:, None]).sum(0) / w.sum()  # core color, relative to the background
            k, cdist = _nearest_color(m, palette - bg)
            v = palette[k] - bg
            alpha = np.clip((d @ v) / float(v @ v), 0.0, 1.0)
            bank = banks[cell]
            peak = float(alpha[margin:-margin, margin:-margin].max())
            if peak < 0.5 or alpha.sum() < 0.35 * bank.min_mass:
                continue
            alpha = alpha / float(alpha.max())  # templates are peak-normalized too: faded or brightened objects match
            err = ((bank.templates - alpha[None]) ** 2).reshape(len(bank.templates), -1).mean(1)
            t = int(np.argmin(err))
            shape, size = bank.labels[t]
            found.append(DetectedObject(colors[k], shape, size, cell, float(err[t]), cdist))
        return bg_name, found


def _nearest_color(m: np.ndarray, rel_palette: np.ndarray) -> tuple[int, float]:
    """Palette index whose segment background->color passes nearest m (all relative to the background).

    A blurred or faded object keeps its hue direction but loses contrast: the segment distance forgives that;
    the small pull toward the endpoint separates colors on one line from the background."""
    vv = (rel_palette ** 2).sum(1)
    t = np.clip(rel_palette @ m / vv, 0.0, 1.0)
    seg = np.linalg.norm(m[None] - t[:, None] * rel_palette, axis=1)
    end = np.linalg.norm(m[None] - rel_palette, axis=1)
    score = seg + 0.15 * end
    k = int(np.argmin(score))
    return k, float(end[k])


def _analysis_shape(height: int, width: int) -> tuple[int, int]:
    if max(height, width) <= ANALYSIS_SIZE:
        return height, width
    scale = ANALYSIS_SIZE / max(height, width)
    return max(GRID * 4, round(height * scale)), max(GRID * 4, round(width * scale))


def _reduce(x: np.ndarray, ah: int, aw: int) -> np.ndarray:
    """Area (box) reduction of float [H, W, C] to [ah, aw, C]; identity when the size already fits."""
    if x.shape[:2] == (ah, aw):
        return x
    chans = [np.asarray(Image.fromarray(np.ascontiguousarray(x[..., c]), "F").resize((aw, ah), Image.BOX))
             for c in range(x.shape[2])]
    return np.stack(chans, axis=-1).astype(np.float32)


def _to_object(o: DetectedObject):
    from dalle.data.shapes import ShapeObject
    return ShapeObject(o.color, o.shape, o.size, o.cell)


# ------------------------------------------------------------------------------------------------------------
# Public functions
# ------------------------------------------------------------------------------------------------------------
_ANALYZERS: dict[str, Analyzer] = {}


def get_analyzer(world_or_config: ShapesWorld | Mapping[str, Any]) -> Analyzer:
    """A cached Analyzer for a ShapesWorld or a `data` config section (same world -> same templates)."""
    world = world_or_config if isinstance(world_or_config, ShapesWorld) else ShapesWorld.from_config(world_or_config)
    key = json.dumps(world.config_dict(), sort_keys=True)
    if key not in _ANALYZERS:
        if len(_ANALYZERS) > 8:
            _ANALYZERS.clear()
        _ANALYZERS[key] = Analyzer(world)
    return _ANALYZERS[key]


def analyze(image: np.ndarray, world_or_config: ShapesWorld | Mapping[str, Any]) -> list[DetectedObject]:
    """Objects in a uint8 [H, W, 3] image (any size; the grid scales with it), sorted by cell."""
    return get_analyzer(world_or_config).analyze(image)


ATTRIBUTES = ("count", "color", "shape", "size", "position", "background", "all")


def matches(detected: Sequence[DetectedObject] | Scene, target: Scene | Request | Sequence[RequestedObject],
            detected_background: str | None = None) -> dict[str, bool]:
    """Per-attribute agreement of detected objects with a scene (every attribute pinned) or a caption's request.

    Requested objects are paired one-to-one with detected ones by the assignment that gets the most objects
    entirely right (then the most attributes right); under that one assignment, color / shape / size / position
    say whether every requested object has that attribute right (None = not asked, matches anything; position
    covers cells and the request's relations). `count`: as many objects found as asked; `all`: everything.
    `background` is checked only when the request and `detected_background` (or a detected Scene) both name one.
    With fewer objects found than asked, every per-object attribute is False.
    """
    if isinstance(detected, Scene):
        detected_background = detected.background if detected_background is None else detected_background
        detected = detected.objects
    request = Request.from_scene(target) if isinstance(target, Scene) else (
        target if isinstance(target, Request) else Request(tuple(target)))
    want, got = list(request.objects), list(detected)
    attrs = ("color", "shape", "size", "position")

    def attr_ok(r: RequestedObject, d, attr: str) -> bool:
        value = r.cell if attr == "position" else getattr(r, attr)
        return value is None or value == (d.cell if attr == "position" else getattr(d, attr))

    best, best_key = None, None
    for assign in itertools.permutations(range(len(got)), len(want)) if len(want) <= len(got) else ():
        table = [[attr_ok(r, got[a], attr) for attr in attrs] for r, a in zip(want, assign)]
        rel = all(relation_holds(got[assign[a]].cell, name, got[assign[b]].cell)
                  for a, name, b in request.relations)
        key = (sum(all(row) for row in table) + rel, sum(map(sum, table)))
        if best_key is None or key > best_key:
            best, best_key = (table, rel), key
    out = {"count": len(want) == len(got)}
    for k, attr in enumerate(attrs):
        out[attr] = best is not None and all(row[k] for row in best[0]) and (attr != "position" or best[1])
    out["background"] = (request.background is None or detected_background is None
                         or request.background == detected_background)
    out["all"] = all(out[a] for a in ("count", "background") + attrs)
    return out
