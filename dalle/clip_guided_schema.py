"""The `clip_guided` config section: how CLIP-guided VQGAN generation optimises, with its defaults in one place.

CLIP-guided generation (dalle/clip_guided.py, "VQGAN+CLIP": Crowson et al. 2022, arXiv:2204.08583) needs no
text-to-image model, so its settings cannot live in a text-to-image model's `sampling` section. A VQGAN model
directory (or any config) may carry this section; `resolve` layers the schema defaults, that section and the
caller's overrides (CLI flags, API arguments; None = keep) and checks the result, naming where a bad value came
from.

Light on purpose: no jax import (config validation imports it).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Iterator, Mapping

from ml_collections import ConfigDict

from dalle import config as config_lib

SECTION = "clip_guided"
INT_KEYS = ("steps", "cutouts", "size")
FLOAT_KEYS = ("lr", "cut_min", "cut_max", "cut_pow", "flip", "noise", "init_noise", "init_weight")


class ClipGuidedError(ValueError):
    """A CLIP-guided request or setting that cannot be used; the message names the bad value and its origin."""


def clip_guided_defaults() -> ConfigDict:
    c = ConfigDict()
    c.steps = 100  # Adam steps on the latents (0 = decode the start as it is)
    c.lr = 0.1  # Adam step size in units of the codebook's per-dimension std (the same for every VQGAN's scale)
    c.cutouts = 16  # random crops per image and step that CLIP scores (averaged: a less noisy, less adversarial signal)
    c.cut_min = 0.5  # smallest cutout side, a fraction of the image side
    c.cut_max = 1.0  # largest cutout side, a fraction of the image side
    c.cut_pow = 1.0  # cutout side ~ cut_min + (cut_max - cut_min) * U^cut_pow: > 1 favours small cutouts
    c.flip = 0.5  # probability that a cutout is mirrored left-right
    c.noise = 0.1  # each cutout gets Gaussian pixel noise of std U(0, noise) (pixels in [0, 1])
    c.init_noise = 0.0  # start from noise: random codebook vectors plus this many codebook stds of Gaussian noise
    c.init_weight = 0.0  # pull towards the start latents (squared distance in codebook stds): keeps an init image
    c.size = 0  # image side in pixels (0 = the VQGAN's own resolution); a multiple of its downsampling factor
    return c


def _errors(s: Mapping[str, Any], name: Callable[[str], str]) -> Iterator[str]:
    """Consistency of complete, well-typed settings; `name(key)` says where each value came from."""
    if s["steps"] < 0:
        yield f"{name('steps')} = {s['steps']} must be >= 0 (0 = decode the start)"
    if not math.isfinite(s["lr"]) or s["lr"] <= 0:
        yield f"{name('lr')} = {s['lr']!r} must be a finite number > 0"
    if s["cutouts"] < 1:
        yield f"{name('cutouts')} = {s['cutouts']} must be >= 1"
    if not 0 < s["cut_min"] <= s["cut_max"] <= 1:
        yield (f"{name('cut_min')} = {s['cut_min']!r} and {name('cut_max')} = {s['cut_max']!r} must satisfy "
               f"0 < cut_min <= cut_max <= 1 (fractions of the image side)")
    if not math.isfinite(s["cut_pow"]) or s["cut_pow"] <= 0:
        yield f"{name('cut_pow')} = {s['cut_pow']!r} must be a finite number > 0"
    if not 0 <= s["flip"] <= 1:
        yield f"{name('flip')} = {s['flip']!r} must be a probability in [0, 1]"
    for key in ("noise", "init_noise", "init_weight"):
        if not math.isfinite(s[key]) or s[key] < 0:
            yield f"{name(key)} = {s[key]!r} must be a finite number >= 0"
    if s["size"] < 0:
        yield f"{name('size')} = {s['size']} must be >= 0 (0 = the VQGAN's resolution)"


def check_clip_guided(s: ConfigDict, config: ConfigDict) -> Iterator[str]:
    yield from _errors(s, lambda k: f"{SECTION}.{k}")


config_lib.register_schema(SECTION, clip_guided_defaults, check_clip_guided)


@dataclasses.dataclass(frozen=True)
class ClipGuidedSettings:
    """Resolved, checked settings (see `clip_guided_defaults` for what each one means). Hashable: the jitted
    step is specialised on it."""

    steps: int
    lr: float
    cutouts: int
    cut_min: float
    cut_max: float
    cut_pow: float
    flip: float
    noise: float
    init_noise: float
    init_weight: float
    size: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def describe(self) -> str:
        return (f"{self.steps} steps at lr {self.lr:g}, {self.cutouts} cutouts of {self.cut_min:g}-{self.cut_max:g} "
                f"of the side, flip {self.flip:g}, noise {self.noise:g}")


def model_section(config: Any) -> Mapping[str, Any]:
    """The `clip_guided` section of a config ({} when it has none)."""
    return config_lib.section_of(config, SECTION, ClipGuidedError)


def resolve(config: Any = None, overrides: Mapping[str, Any] | None = None,
            labels: Mapping[str, str] | None = None) -> ClipGuidedSettings:
    """Schema defaults, then `config`'s `clip_guided` section, then every override that is not None; checked.
    `labels` name an override's origin in errors (e.g. {"steps": "--steps"})."""
    layered = config_lib.layer_settings(clip_guided_defaults().to_dict(), config, SECTION, overrides, labels,
                                        ClipGuidedError, "a CLIP-guided setting")
    values, errors, name = layered.values, layered.errors, layered.name

    for key in INT_KEYS:
        v = values[key]
        if isinstance(v, float) and v.is_integer():
            v = values[key] = int(v)
        if isinstance(v, bool) or not isinstance(v, int):
            errors.append(f"{name(key)} = {v!r} is not a whole number")
    for key in FLOAT_KEYS:
        v = values[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            errors.append(f"{name(key)} = {v!r} is not a number")
        else:
            values[key] = float(v)
    if not errors:
        errors.extend(_errors(values, name))
    if errors:
        raise ClipGuidedError("; ".join(errors))
    return ClipGuidedSettings(**values)
