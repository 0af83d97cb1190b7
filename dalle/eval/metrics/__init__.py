"""Eval metrics: what `eval.metrics` names, each in one place.

A metric is one `Metric` registered in `dalle.registry.METRICS` by a module of this package (or by user code before
the config is validated). For every guidance scale, `dalle eval` (dalle/eval/main.py: _measure) builds one
`EvalContext` and, for each name in `eval.metrics`, writes `measure(context, images, prompts)`:
  * per split (`per_split`):  metrics.json scales.<s>.splits.<split>.<name>, over that split's prompts,
  * over all prompts (`overall`): metrics.json scales.<s>.<name>.
A metric whose key readers always expect (tools/eval_report.py, the FID-vs-CLIP plot) gives `not_asked`, the entry
written when it is left out of `eval.metrics`. A metric that cannot be computed returns a null with the reason.

These modules stay light (no jax or tensorflow imports): config validation imports them to check names.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import numpy as np
from ml_collections import ConfigDict

from dalle import registry

# (context, images uint8 [n, k, H, W, 3] = the kept candidates of n prompts, those n prompts) -> result dict
Measure = Callable[["EvalContext", np.ndarray, Sequence[Any]], dict]


@dataclasses.dataclass
class EvalContext:
    """Everything a metric may read at one guidance scale."""

    settings: ConfigDict  # the `eval` section
    prompts: Sequence[Any]  # dalle.eval.main.Prompt: split, caption, request (shapes prompts), scene
    splits: Sequence[str]  # in the order the prompts list them
    images: np.ndarray  # uint8 [P, k, H, W, 3]: the kept (reranked) candidates of every prompt
    scale: float  # the classifier-free guidance scale these images were sampled at
    data: ConfigDict | None = None  # the checkpoint's `data` section (None for a generator without one)
    clip: Any = None  # loaded CLIP (dalle.modeling.clip.model.load_clip) or None
    features: Any = None  # feature network (dalle.eval.fid.FeatureNetwork) of the metrics that need "features"
    reference: Any = None  # reference statistics (dalle.eval.fid.Statistics) for `features`, or None
    notes: list[str] = dataclasses.field(default_factory=list)  # job-wide notes (metrics.json "notes")
    out_dir: str = ""  # where the job writes its outputs
    shared: dict[str, Any] = dataclasses.field(default_factory=dict)  # kept across scales: pools, fitted models
    first_candidates: np.ndarray | None = None  # uint8 [P, 1, H, W, 3]: each prompt's first sample (no reranking)
    roundtrip: Callable[[np.ndarray], np.ndarray] | None = None  # image tokenizer encode + decode (ceilings)
    _cache: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)

    def cached(self, key: str, compute: Callable[[], Any]) -> Any:
        """`compute()` once per context: work that several metrics share at this scale."""
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def shared_value(self, key: str, compute: Callable[[], Any]) -> Any:
        """`compute()` once per eval job (all scales): caption pools, classifiers fitted on the train split."""
        if key not in self.shared:
            self.shared[key] = compute()
        return self.shared[key]

    def first_of(self, prompts: Sequence[Any]) -> np.ndarray:
        """uint8 [n, 1, H, W, 3]: the first (not reranked) sample of each of `prompts`."""
        where = {id(p): i for i, p in enumerate(self.prompts)}
        return self.first_candidates[[where[id(p)] for p in prompts]]

    def image_features(self, images: np.ndarray | None = None) -> np.ndarray:
        """Feature vectors under `features` of `flat(images)`; those of all kept images (the default) are computed
        once per scale (FID and KID share them)."""
        if images is None or images is self.images:
            return self.cached("image_features", lambda: self.features.features(flat(self.images)))
        return self.features.features(flat(images))


@dataclasses.dataclass(frozen=True)
class Metric:
    """Everything the eval job asks of a name in `eval.metrics`."""

    name: str
    description: str  # one line
    measure: Measure | str  # a callable or "module:attr"
    per_split: bool = False  # measured per split too (splits.<split>.<name>)
    overall: bool = True  # measured over all prompts (<name>)
    not_asked: Callable[[EvalContext], dict] | None = None  # the <name> entry when left out of eval.metrics
    needs: tuple[str, ...] = ()  # what the job must load for it: "features" (the FID network + reference)
    # (context without generated images) -> what real images and their tokenizer round trips score, per split:
    # metrics.json ceilings.<name> (callable or "module:attr"); None: no ceiling.
    ceiling: Any = None

    def __call__(self, context: EvalContext, images: np.ndarray, prompts: Sequence[Any]) -> dict:
        return registry.resolve(self.measure)(context, images, prompts)


def register_metric(metric: Metric, replace: bool = False) -> Metric:
    """Registers `metric` under its name (user code does this before validating a config that names it)."""
    return registry.METRICS.register(metric.name, metric, replace=replace)


def get(name: str) -> Metric:
    """The metric registered under `name`; an unknown name raises listing the known ones."""
    return registry.METRICS.get(name)


def names() -> list[str]:
    return registry.METRICS.names()


def flat(images: np.ndarray) -> np.ndarray:
    """[n, k, H, W, 3] -> [n * k, H, W, 3], prompt-major (candidates of a prompt together)."""
    return images.reshape(-1, *images.shape[2:])


def captions(images: np.ndarray, prompts: Sequence[Any]) -> list[str]:
    """The caption of each image of `flat(images)`."""
    return [p.caption for p in prompts for _ in range(images.shape[1])]
