"""Do a trained model's colour and shape words bind to the objects they name? Attention and ablation evidence.

Behaviour alone (EVAL.md) says that for a held-out pair such as "red star" the model draws a seen shape in the
right colour, or the right shape in a seen colour. This probe looks inside, teacher-forced on each eval prompt's
own reference scene (rendered and encoded by the model's image tokenizer), with no sampling:

* attention: for every object, over the image tokens whose cell covers it (tools/code_coverage.py's object mask,
  cells shared with another object left out), the share of each layer's attention (mean over heads) from those
  image queries on the object's own colour word, its own shape word, the other objects' colour and shape words,
  the other text tokens and (decoder-only) the image tokens. Decoder-only: self-attention from image positions;
  dalle_bart: the decoder's cross-attention to the encoder outputs.
* likelihood: the mean NLL of the object's reference codes under the true caption, under the caption with that
  object's colour word swapped for another colour, and with its shape word swapped for another shape (the swap
  never makes a held-out pair). How much a swap raises the NLL is how much the word steers those codes.

Seen pairs (validation objects, and the seen objects of zero-shot scenes) are compared with held-out pairs
(the zero-shot objects that are one). Writes `<checkpoint>/binding_probe.json` per model and the
`composition-binding` section of EVAL.md:

    .venv/bin/python tools/binding_probe.py --config configs/eval/shapes.py:root=/tmp/exp/multi \\
        --checkpoint decoder-only=/tmp/exp/multi/dalle4400 --checkpoint dalle_bart=/tmp/exp/multi/dalle_bart2

Attention is read without touching the model code: while the probe traces its forward pass,
`layers.attention_kernel` is replaced by one whose `mix` also records the softmax weights it is given
(`record_attention`); every other call, before and after, runs the unchanged kernel.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import re
import sys
import time
from typing import Any, Callable, Iterator, Sequence

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SECTION = "composition-binding"
AFTER = "shapes-multi-curve"  # a new section goes right after this one
TITLE = "Composition: do colour and shape words bind? (attention and ablation)"
SPLITS = ("validation", "zero_shot")
GROUPS = ("seen", "zero_shot_seen", "held_out")
GROUP_LABELS = {"seen": "validation (seen pairs)", "zero_shot_seen": "zero_shot, seen pairs",
                "held_out": "zero_shot, held-out pairs"}
SHARES = ("own_color", "own_shape", "other_color", "other_shape", "other_text", "image")
SHARE_LABELS = ("own colour", "own shape", "other colours", "other shapes", "other text", "image")
SWAPS = ("true", "color", "shape")
BATCH = 64  # caption rows per forward pass (padded to it: one compilation)


# ----------------------------------------------------------------------------------------------------------------
# Captions: which words name which object, and where their tokens are
# ----------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Phrase:
    """One noun phrase of a caption ("[count] [size] colour shape"): the group of objects of one colour-shape
    pair. Word indices are into the caption's whitespace-split words; `shape_words` may be two ("round dot")."""

    color: str
    shape: str
    color_word: int
    shape_words: tuple[int, ...]
    plural: bool


def _bare(word: str) -> tuple[str, str]:
    """(word without trailing punctuation, that punctuation): "triangle," -> ("triangle", ",")."""
    core = word.rstrip(".,;:!?")
    return core, word[len(core):]


def color_lexicon(colors: Sequence[str]) -> dict[str, str]:
    """Caption word -> colour, for the world's object colours (the caption grammar's synonyms included)."""
    from dalle.data import shapes

    return {w: c for c in colors for w in shapes._COLOR_WORDS.get(c, [c])}  # the grammar's own word lists


def shape_lexicon(shape_names: Sequence[str]) -> list[tuple[tuple[str, ...], str, bool]]:
    """(noun words, shape, plural) for every noun the caption grammar uses, longest first (so "round dot" wins)."""
    from dalle.data import shapes

    out = [(tuple(form.split()), s, plural) for s in shape_names for pair in shapes._SHAPE_WORDS[s]
           for plural, form in enumerate(pair)]
    return sorted(out, key=lambda e: -len(e[0]))


def find_phrases(words: Sequence[str], colors: Sequence[str], shape_names: Sequence[str]) -> list[Phrase]:
    """Every colour word directly followed by a shape noun: the grammar puts size and count before the colour,
    so this finds each object group's phrase and skips a background colour ("on a black background")."""
    by_word = color_lexicon(colors)
    nouns = shape_lexicon(shape_names)
    bare = [_bare(w)[0] for w in words]
    out = []
    for i, w in enumerate(bare):
        if w not in by_word or _bare(words[i])[1]:  # "red," ends a phrase: no noun follows
            continue
        for noun, shape, plural in nouns:
            span = tuple(range(i + 1, i + 1 + len(noun)))
            inner = all(not _bare(words[j])[1] for j in span[:-1]) if span and span[-1] < len(words) else False
            if inner and tuple(bare[j] for j in span) == noun:
                out.append(Phrase(by_word[w], shape, i, span, bool(plural)))
                break
    return out


def word_token_positions(words: Sequence[str], vocab: Any, caption_ids: Sequence[int]) -> list[list[int]]:
    """Token positions of each word in the tokenized caption. The tokenizers split on whitespace first, so the
    caption's ids are the concatenation of each word's; checked, since the mapping depends on it."""
    pieces = [list(vocab.encode(w)) for w in words]
    joined = [i for p in pieces for i in p]
    if joined != list(caption_ids):
        raise ValueError(f"caption {' '.join(words)!r}: tokenizing word by word gives {joined}, the whole caption "
                         f"{list(caption_ids)}: word positions cannot be read off")
    out, at = [], 0
    for p in pieces:
        out.append(list(range(at, at + len(p))))
        at += len(p)
    return out


def swap_caption(words: Sequence[str], phrase: Phrase, attribute: str, value: str) -> str:
    """The caption with one word of `phrase` replaced: its colour word by `value`'s first caption word, or its
    shape noun (one or two words) by `value`'s first noun in the same number; trailing punctuation kept."""
    from dalle.data import shapes

    out = list(words)
    if attribute == "color":
        out[phrase.color_word] = shapes._COLOR_WORDS.get(value, [value])[0] + _bare(words[phrase.color_word])[1]
        return " ".join(out)
    if attribute != "shape":
        raise ValueError(f"attribute {attribute!r} must be 'color' or 'shape'")
    last = phrase.shape_words[-1]
    noun = shapes._SHAPE_WORDS[value][0][1 if phrase.plural else 0] + _bare(words[last])[1]
    return " ".join(out[: phrase.shape_words[0]] + [noun] + out[last + 1:])


# ----------------------------------------------------------------------------------------------------------------
# Scenes: which objects are held out (the tokens each one covers: code_coverage.object_cells)
# ----------------------------------------------------------------------------------------------------------------
def is_held_out(world: Any, color: str, shape: str) -> bool:
    from dalle.data.shapes import ShapeObject

    return any(d.matches(ShapeObject(color, shape, "small", 0)) for d in world.held_out_pairs)


def alternative(world: Any, rng: np.random.Generator, attribute: str, color: str, shape: str) -> str:
    """Another colour (or shape) for the swap, chosen so the swapped pair is never a held-out one."""
    if attribute == "color":
        options = [c for c in world.colors if c != color and not is_held_out(world, c, shape)]
    else:
        options = [s for s in world.shapes if s != shape and not is_held_out(world, color, s)]
    if not options:
        raise ValueError(f"no {attribute} to swap into {color} {shape} that is not held out")
    return str(options[rng.integers(len(options))])


# ----------------------------------------------------------------------------------------------------------------
# The model: attention recorded while tracing, teacher-forced NLL
# ----------------------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def record_attention(records: list) -> Iterator[list]:
    """While active, every attention call appends (module name, weights `[B, H, S, K]`) to `records` as it
    mixes the values: the exact softmax the model uses. Only for use while tracing a function that returns what
    it needs from `records` (the arrays are that trace's values); the original kernel is back on exit."""
    import haiku as hk

    from dalle.modeling import layers

    original = layers.attention_kernel

    def kernel(decode_kernels: str, **kw: Any) -> Any:
        base = original(decode_kernels, **kw)

        def mix(weights: Any, v: Any) -> Any:
            records.append((hk.experimental.current_name(), weights))
            return base.mix(weights, v)

        return layers.AttentionKernel(base.scores, mix)

    layers.attention_kernel = kernel
    try:
        yield records
    finally:
        layers.attention_kernel = original


def probed_attention(kind: str, records: list) -> list:
    """The records that carry text-to-image attention, in layer order: decoder-only self-attention, dalle_bart's
    decoder cross-attention."""
    if kind == "decoder_only":
        return [w for name, w in records if "self_attn" in name]
    if kind == "dalle_bart":
        return [w for name, w in records if "cross_attn" in name and "decoder" in name]
    raise ValueError(f"model kind {kind!r}: the probe reads decoder_only and dalle_bart models")


def make_forward(model: Any, with_attention: bool) -> Callable:
    """jit(params, text [B, Lt], codes [B, Li]) -> (NLL of each code `[B, Li]`, attention from the image queries
    `[B, layers, Li, K]` averaged over heads, or None). Keys K: decoder-only text then image positions; dalle_bart
    the text positions (encoder outputs)."""
    import jax
    import jax.numpy as jnp

    if model.config.get("scan_layers"):
        raise ValueError("make_forward needs an unrolled model (model.unrolled(), params via unstack_params): "
                         "attention recorded inside a layer scan would leave the scan")
    lt = model.max_text_length

    def nll_of(params: Any, text: Any, codes: Any) -> Any:
        logits = model.logits(params, {"text_tokens": text, "image_tokens": codes})
        target = jnp.take_along_axis(logits, codes[..., None], axis=-1)[..., 0]
        return jax.nn.logsumexp(logits, axis=-1) - target

    def forward(params: Any, text: Any, codes: Any) -> tuple[Any, Any]:
        if not with_attention:
            return nll_of(params, text, codes), None
        records: list = []
        with record_attention(records):
            nll = nll_of(params, text, codes)
        weights = probed_attention(model.kind, records)
        if len(weights) == 0:
            raise RuntimeError(f"no attention recorded in the {model.kind} model")
        if model.kind == "decoder_only":
            weights = [w[:, :, lt:, :] for w in weights]  # image queries (position lt + i predicts code i)
        return nll, jnp.stack([w.astype(jnp.float32).mean(axis=1) for w in weights], axis=1)

    return jax.jit(forward)


def run_rows(forward: Callable, params: Any, text: np.ndarray, codes: np.ndarray,
             batch: int = BATCH) -> tuple[np.ndarray, np.ndarray | None]:
    """`forward` over all rows in fixed-size batches (the last padded by repeating its first row)."""
    nlls, atts = [], []
    for i in range(0, len(text), batch):
        t, c = text[i:i + batch], codes[i:i + batch]
        pad = batch - len(t)
        nll, att = forward(params, np.concatenate([t, np.repeat(t[:1], pad, 0)]),
                           np.concatenate([c, np.repeat(c[:1], pad, 0)]))
        nlls.append(np.asarray(nll)[: len(t)])
        if att is not None:
            atts.append(np.asarray(att)[: len(t)])
    return np.concatenate(nlls), (np.concatenate(atts) if atts else None)


# ----------------------------------------------------------------------------------------------------------------
# Per object measurements
# ----------------------------------------------------------------------------------------------------------------
def attention_shares(rows: np.ndarray, own: Phrase, others: Sequence[Phrase], positions: list[list[int]],
                     text_length: int) -> np.ndarray:
    """[layers, len(SHARES)] from the object's attention rows `[layers, queries, K]`: the mean over its queries
    of the weight on each group of keys. The groups partition the keys, so a row sums to its attention's total."""
    def keys(phrases: Sequence[Phrase], part: str) -> list[int]:
        """Token positions of the phrases' colour (or shape) words that survived truncation (EOS sits at
        text_length - 1 at the latest)."""
        words = [w for p in phrases for w in ([p.color_word] if part == "color" else p.shape_words)]
        return sorted({t for w in words for t in positions[w] if t < text_length - 1})

    mean = rows.mean(axis=1)  # [layers, K]
    own_c, own_s = keys([own], "color"), keys([own], "shape")
    oth_c = [k for k in keys(others, "color") if k not in own_c]
    oth_s = [k for k in keys(others, "shape") if k not in own_s]
    text = mean[:, :text_length].sum(-1)
    parts = [mean[:, own_c].sum(-1), mean[:, own_s].sum(-1), mean[:, oth_c].sum(-1), mean[:, oth_s].sum(-1)]
    other_text = text - sum(parts)
    image = mean[:, text_length:].sum(-1)
    return np.stack(parts + [other_text, image], axis=-1)


def binding_index(shares: np.ndarray, others: int) -> np.ndarray | None:
    """[layers, 2] own / (own + mean other phrase) for colour and shape words: 0.5 = the object's tokens attend
    to another object's word as much as to their own, 1 = only to their own. None without another phrase."""
    if others == 0:
        return None
    out = []
    for own, other in ((0, 2), (1, 3)):
        o, x = shares[:, own], shares[:, other] / others
        out.append(np.where(o + x > 0, o / np.maximum(o + x, 1e-12), 0.5))
    return np.stack(out, axis=-1)


@dataclasses.dataclass
class Row:
    """One caption row of a forward pass: whose object it probes and how its caption was changed."""

    item: int  # index into the probe's object items
    swap: str  # "true", "color" or "shape"
    caption: str


def prompt_items(world: Any, prompt: Any, vocab: Any, options: Any, max_text_length: int, grid: int,
                 seed: int) -> tuple[list[dict], list[str]]:
    """The probe items of one prompt (one per object whose phrase and cells were found) and why others were
    skipped. An item holds the object, its group, its phrase, the others and its swaps."""
    from dalle.data import text
    from tools import code_coverage

    normalized = text.normalize_caption(prompt.caption, options)
    words = normalized.split()
    ids = list(vocab.encode(normalized))
    positions = word_token_positions(words, vocab, ids)
    phrases = find_phrases(words, world.colors, world.shapes)
    cells = code_coverage.object_cells(world, prompt.scene, grid)
    items, skipped = [], []
    for k, o in enumerate(prompt.scene.objects):
        mine = [p for p in phrases if (p.color, p.shape) == (o.color, o.shape)]
        if len(mine) != 1:
            skipped.append(f"{prompt.split} {prompt.index}: {len(mine)} phrases name the {o.color} {o.shape}")
            continue
        own = mine[0]
        kept = [t for w in (own.color_word, *own.shape_words) for t in positions[w]]
        if max(kept) >= max_text_length - 1:
            skipped.append(f"{prompt.split} {prompt.index}: the {o.color} {o.shape}'s words are truncated")
            continue
        if not cells[k].any():
            skipped.append(f"{prompt.split} {prompt.index}: the {o.color} {o.shape} covers no cell of its own")
            continue
        held = is_held_out(world, o.color, o.shape)
        group = "seen" if prompt.split == "validation" else ("held_out" if held else "zero_shot_seen")
        rng = np.random.default_rng([seed, SPLITS.index(prompt.split), prompt.index, k])
        swaps = {a: alternative(world, rng, a, o.color, o.shape) for a in ("color", "shape")}
        items.append({"split": prompt.split, "prompt": prompt.index, "caption": normalized, "words": words,
                      "positions": positions, "phrase": own, "others": [p for p in phrases if p is not own],
                      "object": dataclasses.asdict(o), "object_index": k, "group": group, "cells": cells[k],
                      "swaps": swaps, "captions": {"true": normalized,
                                                   **{a: swap_caption(words, own, a, v) for a, v in swaps.items()}}})
    return items, skipped


def measure(model: Any, params: Any, vocab: Any, encode: Callable[[np.ndarray], np.ndarray], data: Any,
            prompts_per_split: int, seed: int = 0) -> dict:
    """The probe on one model: per-object records and their summary per group (see the module docstring).
    `encode`: uint8 images [N, H, W, 3] -> codes [N, image_length] (the model's image tokenizer)."""
    from dalle.data import shapes, tasks, text
    from dalle.eval import compositional

    if model.config.get("scan_layers"):  # one module per layer, so each layer's attention is its own record
        model, params = model.unrolled(), model.unstack_params(params)
    world = shapes.ShapesWorld.from_config(data)
    options = text.options_from_config(data, for_prompts=True)
    lt, li = model.max_text_length, model.image_length
    grid = int(round(math.sqrt(li)))
    items, skipped, codes = [], [], []
    for split in SPLITS:
        prompts = compositional.shapes_prompts(data, split, prompts_per_split)
        images = compositional.render_prompts(data, prompts)
        scene_codes = np.concatenate([np.asarray(encode(images[i:i + 64])).reshape(len(images[i:i + 64]), -1)
                                      for i in range(0, len(images), 64)]).astype(np.int32)
        for p, c in zip(prompts, scene_codes):
            got, why = prompt_items(world, p, vocab, options, lt, grid, seed)
            items += got
            skipped += why
            codes += [c] * len(got)
    if not items:
        raise ValueError("no object of any prompt could be probed: " + "; ".join(skipped[:5]))
    rows = [Row(i, s, it["captions"][s]) for i, it in enumerate(items) for s in SWAPS]
    text_ids = tasks.encode_captions([r.caption for r in rows], vocab, lt, options)
    row_codes = np.stack([codes[r.item] for r in rows])
    t0 = time.time()
    true = np.array([r.swap == "true" for r in rows])
    nll_true, att = run_rows(make_forward(model, True), params, text_ids[true], row_codes[true])
    nll_swap, _ = run_rows(make_forward(model, False), params, text_ids[~true], row_codes[~true])
    seconds = time.time() - t0
    ordered = [r for r in rows if r.swap == "true"] + [r for r in rows if r.swap != "true"]
    nll = {(r.item, r.swap): v for r, v in zip(ordered, np.concatenate([nll_true, nll_swap]))}
    objects = [object_record(it, att[i], {s: nll[(i, s)] for s in SWAPS}, lt) for i, it in enumerate(items)]
    return {"kind": model.kind, "layers": int(att.shape[1]), "prompts_per_split": prompts_per_split,
            "seconds": seconds, "skipped": skipped, "groups": summarize(objects), "objects": objects}


def object_record(item: dict, att: np.ndarray, nll: dict[str, np.ndarray], text_length: int) -> dict:
    """What the summary needs of one object (JSON-ready): shares per layer, binding index, NLL per caption."""
    cells = item["cells"]
    shares = attention_shares(att[:, cells], item["phrase"], item["others"], item["positions"], text_length)
    bind = binding_index(shares, len(item["others"]))
    first = int(np.flatnonzero(cells)[0])
    return {"split": item["split"], "prompt": item["prompt"], "caption": item["caption"], "object": item["object"],
            "group": item["group"], "cells": int(cells.sum()), "other_phrases": len(item["others"]),
            "swaps": item["swaps"], "swapped_captions": {a: item["captions"][a] for a in ("color", "shape")},
            "shares": shares.tolist(), "binding": None if bind is None else bind.tolist(),
            "nll": {s: float(nll[s][cells].mean()) for s in SWAPS},
            "nll_first": {s: float(nll[s][first]) for s in SWAPS}}


def _mean_se(values: Sequence[float]) -> tuple[float | None, float | None]:
    v = np.asarray(values, np.float64)
    if v.size == 0:
        return None, None
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else 0.0


def summarize(objects: Sequence[dict]) -> dict:
    """Per group: object count, mean shares per layer, mean binding index per layer (objects with another
    phrase), and mean ± standard error of the NLL under each caption and of each swap's rise over the true one."""
    out = {}
    for g in GROUPS:
        mine = [o for o in objects if o["group"] == g]
        if not mine:
            continue
        bound = [o for o in mine if o["binding"] is not None]
        shares = np.asarray([o["shares"] for o in mine])
        entry = {"objects": len(mine), "shares": shares.mean(0).tolist(),
                 "shares_over_layers": dict(zip(SHARES, ([list(_mean_se(shares[:, :, j].mean(1)))
                                                          for j in range(len(SHARES))]))),
                 "bound_objects": len(bound),
                 "binding": np.asarray([o["binding"] for o in bound]).mean(0).tolist() if bound else None,
                 "binding_se": ((np.asarray([o["binding"] for o in bound]).std(0, ddof=1) / math.sqrt(len(bound)))
                                .tolist() if len(bound) > 1 else None),
                 "binding_over_layers": ([list(_mean_se(np.asarray([o["binding"] for o in bound])[:, :, j].mean(1)))
                                          for j in (0, 1)] if bound else None)}
        for key in ("nll", "nll_first"):
            entry[key] = {s: list(_mean_se([o[key][s] for o in mine])) for s in SWAPS}
            entry[key + "_rise"] = {s: list(_mean_se([o[key][s] - o[key]["true"] for o in mine]))
                                    for s in ("color", "shape")}
        out[g] = entry
    return out


# ----------------------------------------------------------------------------------------------------------------
# The EVAL.md section
# ----------------------------------------------------------------------------------------------------------------
def compare(a: Sequence[float | None], b: Sequence[float | None]) -> str:
    """How mean `a` (mean, se) stands to `b`: 'higher than', 'lower than' or 'about the same as' (within two
    combined standard errors)."""
    if a[0] is None or b[0] is None:
        return "not comparable with"
    if abs(a[0] - b[0]) <= 2 * math.hypot(a[1] or 0.0, b[1] or 0.0):
        return "about the same as"
    return "higher than" if a[0] > b[0] else "lower than"


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _ms(v: Sequence[float | None], scale: float = 1.0, digits: int = 2) -> str:
    return "n/a" if v[0] is None else f"{scale * v[0]:.{digits}f} ± {scale * (v[1] or 0):.{digits}f}"


def render_model(name: str, r: dict) -> list[str]:
    groups = [g for g in GROUPS if g in r["groups"]]
    where = ("self-attention from image positions (keys: text and image tokens)" if r["kind"] == "decoder_only"
             else "the decoder's cross-attention to the encoder outputs (keys: text positions only)")
    lines = [f"### {name} ({r['kind']}, {r['layers']} layers)", "",
             f"Attention: {where}, mean over heads, over the object's own image tokens, then over objects. Objects: "
             + ", ".join(f"{GROUP_LABELS[g]} {r['groups'][g]['objects']}" for g in groups)
             + (f"; {len(r['skipped'])} skipped (phrase not found, words truncated or no cell of its own)"
                if r["skipped"] else "") + ".", "",
             "| layer | objects | " + " | ".join(SHARE_LABELS) + " | own-word preference colour / shape |",
             "|---|---|" + "---|" * len(SHARES) + "---|"]
    for layer in range(r["layers"]):
        for g in groups:
            e = r["groups"][g]
            shares = e["shares"][layer]
            bind = ("n/a" if e["binding"] is None else
                    f"{e['binding'][layer][0]:.2f} / {e['binding'][layer][1]:.2f} ({e['bound_objects']})")
            lines.append(f"| {layer} | {GROUP_LABELS[g]} | " + " | ".join(_pct(s) for s in shares) + f" | {bind} |")
    lines += ["", "NLL (nats per code) of the object's reference codes, teacher-forced, mean ± standard error over "
              "objects; rise = swapped caption minus true caption, per object; first code = the object's first token "
              "in raster order, the one no earlier code of the object predicts:", "",
              "| objects | true caption | colour word swapped | shape word swapped | rise, colour swap | rise, shape "
              "swap | first code: true | first code: rise colour / shape |", "|---|---|---|---|---|---|---|---|"]
    for g in groups:
        e = r["groups"][g]
        lines.append(f"| {GROUP_LABELS[g]} | {_ms(e['nll']['true'])} | {_ms(e['nll']['color'])} | "
                     f"{_ms(e['nll']['shape'])} | {_ms(e['nll_rise']['color'])} | {_ms(e['nll_rise']['shape'])} | "
                     f"{_ms(e['nll_first']['true'])} | {_ms(e['nll_first_rise']['color'])} / "
                     f"{_ms(e['nll_first_rise']['shape'])} |")
    return lines


def _rise_clear(v: Sequence[float | None]) -> bool:
    """Whether a swap's mean NLL rise is above zero by more than two standard errors."""
    return v[0] is not None and v[0] > 2 * (v[1] or 0.0)


def _steers_less(held: Sequence[float | None], seen: Sequence[float | None]) -> bool:
    """A held-out pair's rise is below a seen pair's, or not clear where the seen pair's is."""
    return compare(held, seen) == "lower than" or (_rise_clear(seen) and not _rise_clear(held))


def _steer_word(held: Sequence[float | None], seen: Sequence[float | None]) -> str:
    """How a held-out pair's NLL rise under a swap reads against a seen pair's."""
    if held[0] is None or seen[0] is None:
        return "cannot be compared with"
    if not _rise_clear(held):
        return "is no clear rise at all, against"
    c = compare(held, seen)
    if c == "lower than":
        return f"is {held[0] / seen[0]:.0%} of" if seen[0] > 0 else "is lower than"
    return {"higher than": "is larger than", "about the same as": "is about the same as"}[c]


def _preferred(e: dict, j: int) -> str:
    """The layers where objects clearly prefer their own word `j` (0 colour, 1 shape) over another object's:
    preference above 0.5 by more than two standard errors."""
    if not e.get("binding") or not e.get("binding_se"):
        return "no layer (no object with another phrase)"
    layers_ = [k for k, (m, se) in enumerate(zip(e["binding"], e["binding_se"])) if m[j] - 2 * se[j] > 0.5]
    if not layers_:
        return "no layer"
    top = max(e["binding"][k][j] for k in layers_)
    return f"layer{'s' if len(layers_) > 1 else ''} {', '.join(map(str, layers_))} (up to {top:.2f})"


def analysis(results: Sequence[tuple[str, dict]]) -> list[str]:
    """3-6 sentences stating what the measured numbers show; every comparison word is computed from them."""
    usable = [(n, r) for n, r in results if "seen" in r["groups"] and "held_out" in r["groups"]]
    if not usable:
        return ["No model had both validation and held-out-pair objects to compare."]
    att, bind, steer, cost, verdicts = [], [], [], [], []
    for name, r in usable:
        s, h = r["groups"]["seen"], r["groups"]["held_out"]
        so, ho = s["shares_over_layers"], h["shares_over_layers"]
        att.append(f"{name}: own colour word {_pct(ho['own_color'][0])} vs {_pct(so['own_color'][0])} "
                   f"({compare(ho['own_color'], so['own_color'])}), own shape word {_pct(ho['own_shape'][0])} vs "
                   f"{_pct(so['own_shape'][0])} ({compare(ho['own_shape'], so['own_shape'])})")
        if s.get("binding") or h.get("binding"):  # only captions naming another object have a preference
            bind.append(f"{name}: validation objects prefer their own colour word at {_preferred(s, 0)} and held-out "
                        f"ones at {_preferred(h, 0)}, their own shape word at {_preferred(s, 1)} and "
                        f"{_preferred(h, 1)} respectively")
        rc, rs = h["nll_rise"]["color"], h["nll_rise"]["shape"]
        sc, ss = s["nll_rise"]["color"], s["nll_rise"]["shape"]
        steer.append(f"{name}: colour swap {_ms(rc)} {_steer_word(rc, sc)} {_ms(sc)}, shape swap {_ms(rs)} "
                     f"{_steer_word(rs, ss)} {_ms(ss)}")
        zs = r["groups"].get("zero_shot_seen")
        cost.append(f"{name}: {_ms(h['nll']['true'])} for held-out pairs, {compare(h['nll']['true'], s['nll']['true'])}"
                    f" the {_ms(s['nll']['true'])} of validation objects"
                    + (f" and {compare(h['nll']['true'], zs['nll']['true'])} the {_ms(zs['nll']['true'])} of the "
                       "seen objects in the same zero-shot scenes" if zs else ""))
        verdicts.append(_verdict(name, s, h))
    preference = ["Against the words of the other objects in the same caption (own-word preference above 0.5 by "
                  "more than two standard errors; objects whose caption names another object): "
                  + "; ".join(bind) + "."] if bind else []
    return ["Averaged over layers, the image tokens of a held-out-pair object put this share of their attention on "
            "their own words, against a validation object's: " + "; ".join(att) + ".", *preference,
            "Swapping the object's colour or shape word raises the NLL of its reference codes, per code, for "
            "held-out pairs by (against validation objects): " + "; ".join(steer) + ".",
            "Under the true caption, the reference codes cost " + "; ".join(cost) + ".", *verdicts]


def _verdict(name: str, s: dict, h: dict) -> str:
    """One conditional sentence per model: where the numbers put the zero-shot failure."""
    so, ho = s["shares_over_layers"], h["shares_over_layers"]
    attends_less = any(compare(ho[k], so[k]) == "lower than" for k in ("own_color", "own_shape"))
    weaker = [a for a in ("color", "shape") if _steers_less(h["nll_rise"][a], s["nll_rise"][a])]
    costlier = compare(h["nll"]["true"], s["nll"]["true"]) == "higher than"
    read = ("its held-out objects' tokens attend less to their own words than seen objects' do"
            if attends_less else "its held-out objects' tokens attend to their own words about as much as seen "
            "objects' do or more")
    if weaker:
        words = " and ".join({"color": "colour", "shape": "shape"}[a] for a in weaker)
        steer = (f"their {words} word{'s' if len(weaker) > 1 else ''} steer{'' if len(weaker) > 1 else 's'} "
                 "their codes less than for seen pairs")
    else:
        steer = "both words steer their codes at least as much as for seen pairs"
    tail = (", and their reference codes are less likely than seen pairs' even under the true caption"
            if costlier else ", and their reference codes are about as likely as seen pairs' under the true caption")
    end = (": attention finds the object's words as it does for a seen pair, but the codes of a pair the model "
           "never saw in training stay improbable under them" if costlier and not attends_less else "")
    return f"For {name}, {read}; {steer}{tail}{end}."


def render(results: Sequence[tuple[str, dict]], command: str, prompts: int, title: str = TITLE) -> str:
    lines = [f"## {title}", "",
             f"Command: `{command}`.", "",
             f"The first {prompts} prompts of the validation and zero_shot splits, teacher-forced on their own "
             "reference scenes (rendered, encoded by the model's image tokenizer); no sampling. An object's image tokens are "
             "the token cells it alone covers (tools/code_coverage.py's object mask). Its own words are the colour "
             "word and shape noun of the caption phrase that names it; a swap replaces one of them with another "
             "colour or shape (never making a held-out pair). Own-word preference = own / (own + the mean over "
             "the caption's other phrases), per attribute, over objects whose caption names another object.", ""]
    for name, r in results:
        lines += render_model(name, r) + [""]
    lines += ["### What the numbers show", "", " ".join(analysis(results))]
    return "\n".join(lines) + "\n"


def write_section(body: str, target: str = "", section: str = SECTION, after: str = AFTER) -> None:
    """Writes `section` with tools/eval_report.py's helper; a new one goes right after the `after` section."""
    from tools import eval_report

    target = target or os.path.join(ROOT, "EVAL.md")
    begin, after_end = f"<!-- eval:{section} -->", f"<!-- /eval:{after} -->"
    if os.path.exists(target):
        document = open(target).read()
        if begin not in document and after_end in document:
            placeholder = f"{after_end}\n{begin}\n<!-- /eval:{section} -->\n"
            with open(target, "w") as f:
                f.write(document.replace(after_end + "\n", placeholder, 1) if after_end + "\n" in document
                        else document.replace(after_end, placeholder.rstrip("\n"), 1))
    eval_report.write_section(section, body, target)


# ----------------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------------
def parse_checkpoint(spec: str) -> tuple[str, str]:
    """'NAME=DIR' or 'DIR' (named after its folder)."""
    name, sep, path = spec.partition("=")
    if not sep:
        name, path = os.path.basename(os.path.normpath(spec)), spec
    if not name or not path:
        raise ValueError(f"--checkpoint {spec!r}: expected NAME=DIR or DIR")
    if not os.path.isdir(path):
        raise ValueError(f"--checkpoint {spec!r}: {path!r} is not a directory")
    return name, path


def probe_checkpoint(path: str, ev: Any, prompts: int) -> dict:
    """Loads a trained model as `dalle eval` does (its tokenizers, eval overrides) and probes it."""
    from dalle import generation

    gen = generation.Generator.from_checkpoint(path, tokenizer_path=ev.tokenizer_path,
                                               vqgan_checkpoint=ev.vqgan_checkpoint, decode_kernels="xla",
                                               dtype=ev.get("dtype", "float32"))
    return measure(gen.model, gen.params, gen.vocab, lambda im: np.asarray(gen.vqgan.encode(im)), gen.config.data,
                   prompts, int(ev.seed))


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", action="append", required=True, help="NAME=DIR or DIR (repeat for more)")
    p.add_argument("--config", default="configs/eval/shapes.py", help="eval config (tokenizer/VQGAN overrides)")
    p.add_argument("--prompts", type=int, default=100, help="prompts per split")
    p.add_argument("--no_write", "--no-write", action="store_true",
                   help="print the section; write neither EVAL.md nor the JSON files")
    p.add_argument("--section", default=SECTION, help="the EVAL.md section to write (another set of models)")
    p.add_argument("--title", default=TITLE, help="its heading")
    p.add_argument("--after", default=AFTER, help="a new section goes right after this one")
    args = p.parse_args(argv)
    if args.prompts < 1:
        p.error(f"--prompts {args.prompts} must be at least 1")
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", args.section):
        p.error(f"--section {args.section!r}: use lowercase letters, digits, '-' and '_'")
    from dalle import config as config_lib

    try:
        checkpoints = [parse_checkpoint(c) for c in args.checkpoint]
    except ValueError as e:
        p.error(str(e))
    ev = config_lib.load_config(args.config, []).eval
    results = []
    for name, path in checkpoints:
        r = probe_checkpoint(path, ev, args.prompts)
        r["checkpoint"] = path
        results.append((name, r))
        print(f"{name}: {sum(g['objects'] for g in r['groups'].values())} objects in {r['seconds']:.0f} s")
        if not args.no_write:
            with open(os.path.join(path, "binding_probe.json"), "w") as f:
                json.dump(r, f, indent=1)
    command = ".venv/bin/python tools/binding_probe.py " + " ".join(
        f'"{a}"' if " " in a else a for a in argv)
    body = render(results, command, args.prompts, args.title)
    print(body)
    if not args.no_write:
        write_section(body, section=args.section, after=args.after)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
