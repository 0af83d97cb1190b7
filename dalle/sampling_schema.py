"""The `sampling` config section: how a text-to-image model is sampled by default, saved with the model.

One place for the defaults of guidance, temperature, top-k, top-p, candidates per prompt and CLIP reranking. A
training config may carry the section (configs/shapes_tiny.py does); the DALL·E task exports it into the model
directory's config.json, `dalle eval` rewrites it with the best guidance it measured, and `dalle generate`,
`dalle serve`, the eval job and the demo read it through `resolve`, where command-line flags, request fields and
eval-config keys override it (None = "the model's value"). A model directory without the section (older exports,
converted weights) samples with the defaults below, which are what `dalle generate` used before the section.

Light on purpose: no jax import (validation must stay cheap).
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from typing import Any, Callable, Iterator, Mapping

from ml_collections import ConfigDict

from dalle import config as config_lib

SECTION = "sampling"
FLOAT_KEYS = ("guidance", "temperature", "top_p")
INT_KEYS = ("top_k", "candidates", "keep")
STR_KEYS = ("clip_checkpoint",)


class SamplingError(ValueError):
    """Sampling settings that cannot be used; the message names where the bad value came from."""


def sampling_defaults() -> ConfigDict:
    c = ConfigDict()
    c.guidance = 3.0  # super-conditioning / classifier-free guidance s: uncond + s (cond - uncond); 1 = off
    c.temperature = 1.0  # 0 = greedy
    c.top_k = 0  # sample among the k likeliest image codes (0 = off)
    c.top_p = 1.0  # nucleus sampling mass (1 = off)
    c.candidates = 8  # images sampled per prompt
    c.keep = 0  # images kept per prompt (0 = all): the CLIP-best when clip_checkpoint is set, else the first
    c.clip_checkpoint = ""  # CLIP model dir that ranks the candidates ("" = no reranking)
    c.examples = ()  # prompts this model is shown with: the web demo's examples, `dalle demo`'s sample grid
    return c


def _errors(s: Mapping[str, Any], name: Callable[[str], str], image_codes: int = 0) -> Iterator[str]:
    """Consistency of complete, well-typed settings; `name(key)` says where each value came from."""
    for key in ("guidance", "temperature"):
        if not math.isfinite(s[key]) or s[key] < 0:
            yield f"{name(key)} = {s[key]!r} must be a finite number >= 0" + (" (0 = greedy)" if key == "temperature"
                                                                             else " (1 = off)")
    if s["top_k"] < 0 or (image_codes and s["top_k"] > image_codes):
        bound = f"the model's {image_codes} image codes" if image_codes else "the number of image codes"
        yield f"{name('top_k')} = {s['top_k']} must be between 0 (off) and {bound}"
    if not 0 < s["top_p"] <= 1:
        yield f"{name('top_p')} = {s['top_p']!r} must be in (0, 1] (1 = off)"
    if s["candidates"] < 1:
        yield f"{name('candidates')} = {s['candidates']} must be >= 1"
    elif not 0 <= s["keep"] <= s["candidates"]:
        yield (f"{name('keep')} = {s['keep']} must be between 0 (keep all) and {name('candidates')} = "
               f"{s['candidates']}")


def _image_codes(config: Any) -> int:
    model = config.get("model") if hasattr(config, "get") else None
    codes = model.get("image_vocab_size", 0) if hasattr(model, "get") else 0
    return codes if isinstance(codes, int) and not isinstance(codes, bool) else 0


def check_sampling(s: ConfigDict, config: ConfigDict) -> Iterator[str]:
    yield from _errors(s, lambda k: f"sampling.{k}", _image_codes(config))


config_lib.register_schema(SECTION, sampling_defaults, check_sampling)


@dataclasses.dataclass(frozen=True)
class Sampling:
    """Resolved, checked settings (see `sampling_defaults` for what each one means)."""

    guidance: float
    temperature: float
    top_k: int
    top_p: float
    candidates: int
    keep: int
    clip_checkpoint: str
    examples: tuple[str, ...] = ()

    @property
    def kept(self) -> int:
        """Images shown per prompt."""
        return self.keep or self.candidates

    def sampler_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of `dalle.generation.Generator.codes` (and `modeling.sampling.generate`)."""
        return {"condition_scale": self.guidance, "temperature": self.temperature, "top_k": self.top_k,
                "top_p": self.top_p}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def describe(self, reranked: bool) -> str:
        rerank = f"keep the best {self.kept} by CLIP" if reranked else f"keep the first {self.kept}"
        return (f"guidance {self.guidance:g}, temperature {self.temperature:g}, top-k {self.top_k}, top-p "
                f"{self.top_p:g}, {self.candidates} candidate(s), {rerank}")


def model_section(config: Any) -> Mapping[str, Any]:
    """The `sampling` section of a model's config ({} when it has none)."""
    return config_lib.section_of(config, SECTION, SamplingError)


def resolve(config: Any = None, overrides: Mapping[str, Any] | None = None,
            labels: Mapping[str, str] | None = None) -> Sampling:
    """The settings to sample with: schema defaults, then the model config's `sampling` section, then every
    override that is not None. `labels` name an override's origin in errors (e.g. {"candidates": "--n"})."""
    layered = config_lib.layer_settings(sampling_defaults().to_dict(), config, SECTION, overrides, labels, KeyError,
                                        "a sampling setting")
    values, errors, name = layered.values, layered.errors, layered.name

    for key in FLOAT_KEYS:
        v = values[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            errors.append(f"{name(key)} = {v!r} is not a number")
        else:
            values[key] = float(v)
    for key in INT_KEYS:
        v = values[key]
        if isinstance(v, float) and v.is_integer():
            v = values[key] = int(v)
        if isinstance(v, bool) or not isinstance(v, int):
            errors.append(f"{name(key)} = {v!r} is not a whole number")
    for key in STR_KEYS:
        if not isinstance(values[key], str):
            errors.append(f"{name(key)} = {values[key]!r} must be a path (text)")
    if isinstance(values["examples"], (list, tuple)) and all(isinstance(x, str) for x in values["examples"]):
        values["examples"] = tuple(values["examples"])
    else:
        errors.append(f"{name('examples')} = {values['examples']!r} must be a list of prompts (text)")
    if not errors:
        errors.extend(_errors(values, name, _image_codes(config)))
    if errors:
        raise SamplingError("; ".join(errors))
    return Sampling(**values)


def with_section(config: ConfigDict) -> ConfigDict:
    """A copy of `config` whose `sampling` section is complete: what a model directory is exported with."""
    out = ConfigDict(config.to_dict())
    out[SECTION] = ConfigDict(resolve(config).to_dict())
    return out


def rerank_clip(settings: Sampling, from_user: bool) -> str:
    """The CLIP dir to rerank with ("" = none). A CLIP the model's section names but that is not there (the
    model was moved, or its CLIP never trained) is skipped with a warning so the model still samples; one the
    user gave must exist (the CLIP loader raises)."""
    path = settings.clip_checkpoint
    if path and not from_user and not os.path.exists(path):
        warnings.warn(f"the model's sampling.clip_checkpoint {path!r} does not exist: candidates are not reranked "
                      f"(give a CLIP with --clip DIR, or --clip '' to turn reranking off)", stacklevel=2)
        return ""
    return path
