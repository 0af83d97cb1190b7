"""Where each `ln_positions` value puts the LayerNorms of a transformer layer: one table row per placement.

The blocks (layers.py), the model stacks (dalle_bart.py, decoder_only.py), the config checks (schema.py) and the
dalle-mini converter (convert_dalle_mini.py) all read `PLACEMENTS`, so a new placement is one row here. The
placements are dalle-mini's (`ln_positions` of its `DalleBartConfig`, modeling.py):

  normformer  NormFormer (arXiv:2110.09456): r + N_post(f(N_pre(x))), and a mid-norm on the FFN hidden units
  swinv2      Swin v2 res-post-norm (arXiv:2111.09883): r + N_post(f(x)), and a layer-output norm every 6 layers
  cogview     CogView sandwich-LN (arXiv:2105.13290): r + N_post(f(N_pre(x))) in attention and FFN
  preln       r + f(N_pre(x))
  postln      N(r * alpha + f(x)) (DeepNet, arXiv:2203.00555, is post-LN plus its residual/init gains)
  subln       Magneto sub-LN (arXiv:2210.06423): r + f(N_pre(x)), a norm before out_proj and inside the FFN

Light on purpose: no jax import (schema validation reads it).
"""

from __future__ import annotations

import dataclasses

LN_TYPES = ("layernorm", "rmsnorm")
SIDES = ("encoder", "decoder")

# Norms whose output goes straight into a dense layer carry only a bias unless `force_ln_scale` (NormFormer and
# dalle-mini: the kernel absorbs the scale). Every other norm carries a scale (the sub-LN norm before out_proj
# included, as in dalle-mini).
BIAS_ONLY_SITES = frozenset({"attn_pre", "ffn_pre", "ffn_mid", "final"})
SITES = ("attn_pre", "attn_post", "attn_mid", "attn_residual", "ffn_pre", "ffn_mid", "ffn_post", "output", "final")


@dataclasses.dataclass(frozen=True)
class NormPlacement:
    """Which norms one placement creates in a layer (residual r, sub-layer f; see the module docstring)."""

    name: str
    aliases: tuple[str, ...] = ()  # other `ln_positions` values meaning this placement (dalle-mini's names)
    attn_pre: tuple[str, ...] = ()  # sides whose attention sub-layers normalise their input: r + f(N(x))
    attn_post: bool = False  # attention sub-layers normalise their output: r + N(f(x))
    attn_mid: bool = False  # self-attention normalises the merged heads before out_proj
    attn_residual: bool = False  # a norm after each attention residual: N(r * alpha + f(x))
    ffn_pre: bool = False  # the FFN normalises its input
    ffn_mid: bool = False  # the FFN normalises its hidden units before `wo`
    ffn_post: bool = False  # the FFN normalises its output
    output_every: int = 0  # a norm after the FFN residual of every k-th layer (0: none)
    output_last: bool = True  # ... including the last layer (Swin v2 skips it)
    final_norm: bool = True  # False: layers already end with a norm, so the stack has no final_ln

    def has_attn_pre(self, side: str) -> bool:
        if side not in SIDES:
            raise ValueError(f"unknown side {side!r} (known: {SIDES})")
        return side in self.attn_pre

    def output_norm_layers(self, num_layers: int) -> list[bool]:
        """Which of `num_layers` layers apply the layer-output norm."""
        if not self.output_every:
            return [False] * num_layers
        return [(i + 1) % self.output_every == 0 and (self.output_last or i != num_layers - 1)
                for i in range(num_layers)]


_BOTH = SIDES
PLACEMENTS: tuple[NormPlacement, ...] = (
    NormPlacement("normformer", attn_pre=_BOTH, attn_post=True, ffn_pre=True, ffn_mid=True),
    NormPlacement("swinv2", attn_post=True, ffn_post=True, output_every=6, output_last=False),
    NormPlacement("cogview", aliases=("sandwich",), attn_pre=_BOTH, attn_post=True, ffn_pre=True, ffn_post=True),
    NormPlacement("preln", attn_pre=_BOTH, ffn_pre=True),
    NormPlacement("postln", aliases=("deepnet",), attn_residual=True, output_every=1, final_norm=False),
    # dalle-mini puts sub-LN's pre-attention norm in encoder layers only (its decoder layer omits subln there).
    NormPlacement("subln", attn_pre=("encoder",), attn_mid=True, ffn_pre=True, ffn_mid=True),
)


def names() -> tuple[str, ...]:
    """Every accepted `ln_positions` value, each placement's aliases after it."""
    return tuple(n for p in PLACEMENTS for n in (p.name, *p.aliases))


def get(ln_positions: str) -> NormPlacement:
    """The placement named `ln_positions` (or one of its aliases); read from `PLACEMENTS` at every call."""
    for placement in PLACEMENTS:
        if ln_positions == placement.name or ln_positions in placement.aliases:
            return placement
    raise ValueError(f"unknown ln_positions {ln_positions!r} (known: {names()})")


def canonical(ln_positions: str) -> str:
    """The placement's own name for an alias (`deepnet` -> `postln`, `sandwich` -> `cogview`)."""
    return get(ln_positions).name


def use_scale(site: str, force_ln_scale: bool) -> bool:
    """Whether the norm at `site` (one of SITES) carries a learned scale."""
    if site not in SITES:
        raise ValueError(f"unknown norm site {site!r} (known: {SITES})")
    return force_ln_scale or site not in BIAS_ONLY_SITES
