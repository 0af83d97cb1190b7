"""The norm-placement table (dalle/modeling/norm_placement.py) is what the blocks, the schema and the dalle-mini
converter read: every row builds exactly the norms it lists, and a new placement is one row."""

import dataclasses

import haiku as hk
import jax
import jax.numpy as jnp
import jmp
import pytest
from ml_collections import ConfigDict

from dalle.modeling import convert_dalle_mini, layers, norm_placement, presets
from dalle.modeling import model as model_lib
from dalle.modeling import schema as model_schema

F32 = jmp.Policy(jnp.float32, jnp.float32, jnp.float32)


def expected_norms(place: norm_placement.NormPlacement, side: str, force_ln_scale: bool) -> dict[str, bool]:
    """Norm module (inside a block) -> whether it has a scale, as the table says."""
    out = {}
    attns = ["self_attn"] + (["cross_attn"] if side == "decoder" else [])
    for attn in attns:
        for site, present, name in (("attn_pre", place.has_attn_pre(side), f"{attn}_pre_norm"),
                                    ("attn_post", place.attn_post, f"{attn}_post_norm"),
                                    ("attn_residual", place.attn_residual, f"{attn}_residual_norm")):
            if present:
                out[name] = norm_placement.use_scale(site, force_ln_scale)
    if place.attn_mid:
        out["self_attn/mid_norm"] = norm_placement.use_scale("attn_mid", force_ln_scale)
    for site, present, name in (("ffn_pre", place.ffn_pre, "ffn/pre_norm"), ("ffn_mid", place.ffn_mid, "ffn/mid_norm"),
                                ("ffn_post", place.ffn_post, "ffn/post_norm"),
                                ("output", bool(place.output_every), "output_norm")):
        if present:
            out[name] = norm_placement.use_scale(site, force_ln_scale)
    return out


def block_norms(spec: layers.TransformerSpec) -> dict[str, bool]:
    def f(x, enc):
        return layers.Block(spec, F32, name="b")(x, q_positions=jnp.arange(4), encoder_hidden=enc).x

    params = jax.eval_shape(hk.transform(f).init, jax.random.PRNGKey(0), jnp.ones((1, 4, 16)), jnp.ones((1, 3, 16)))
    return {m[len("b/"):]: "scale" in leaves for m, leaves in params.items() if m.endswith("norm")}


@pytest.mark.parametrize("force_ln_scale", [False, True])
@pytest.mark.parametrize("side", norm_placement.SIDES)
@pytest.mark.parametrize("name", norm_placement.names())
def test_block_builds_the_norms_of_its_row(name, side, force_ln_scale):
    enc = side == "encoder"
    spec = layers.TransformerSpec(d_model=16, num_heads=2, ffn_dim=24, ln_positions=name, is_encoder=enc,
                                  has_cross_attention=not enc, self_length=4, cross_length=3,
                                  force_ln_scale=force_ln_scale)
    assert block_norms(spec) == expected_norms(norm_placement.get(name), side, force_ln_scale)


def test_aliases_and_unknown_names():
    assert norm_placement.canonical("deepnet") == "postln"
    assert norm_placement.canonical("sandwich") == "cogview"
    assert norm_placement.names() == ("normformer", "swinv2", "cogview", "sandwich", "preln", "postln", "deepnet",
                                      "subln")
    assert norm_placement.get("swinv2").output_norm_layers(13) == [i in (5, 11) for i in range(13)]
    assert norm_placement.get("postln").output_norm_layers(3) == [True, True, True]
    with pytest.raises(ValueError, match="unknown ln_positions 'sandwhich'"):
        norm_placement.get("sandwhich")
    with pytest.raises(ValueError, match="unknown ln_positions"):
        layers.TransformerSpec(d_model=16, num_heads=2, ffn_dim=24, ln_positions="sandwhich")


def test_a_new_placement_is_one_table_row(monkeypatch):
    """A toy row (pre-norm attention, post-norm FFN, a norm after every 2nd layer) reaches the schema, the model
    and the dalle-mini converter with nothing else edited."""
    toy = norm_placement.NormPlacement("toy", aliases=("toy_alias",), attn_pre=("decoder",), ffn_post=True,
                                       output_every=2)
    monkeypatch.setattr(norm_placement, "PLACEMENTS", norm_placement.PLACEMENTS + (toy,))

    cfg = presets.tiny()
    cfg.ln_positions = "toy_alias"
    assert not [e for e in model_schema.check_dalle_bart(cfg, ConfigDict()) if "ln_positions" in e]
    model = model_lib.build_model(cfg)
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0))
    for side in norm_placement.SIDES:
        prefix = f"dalle_bart/{side}/layers/layer/"
        got = {m[len(prefix):] for m in params if m.startswith(prefix) and m.endswith("norm")}
        assert got == set(expected_norms(toy, side, cfg.force_ln_scale)), side
    spec = dataclasses.replace(layers.TransformerSpec(d_model=16, num_heads=2, ffn_dim=24), ln_positions="toy")
    assert list(layers.output_norm_flags(spec, 5)) == [False, True, False, True, False]

    mapped = dict(convert_dalle_mini._layer_module_map(cfg, "decoder"))
    assert {ours for ours in mapped.values() if ours.endswith("norm")} == {
        "self_attn_pre_norm", "cross_attn_pre_norm", "ffn/post_norm", "output_norm"}

    cfg.ln_positions = "nope"
    errors = list(model_schema.check_dalle_bart(cfg, ConfigDict()))
    assert any("'toy'" in e and "'toy_alias'" in e for e in errors), errors


def test_spec_from_config_reads_every_shared_key():
    cfg = presets.tiny_decoder_only()
    cfg.ln_positions, cfg.use_head_scale, cfg.dropout = "subln", True, 0.25
    spec = layers.TransformerSpec.from_config(cfg, self_length=7)
    assert (spec.d_model, spec.num_heads, spec.ffn_dim) == (cfg.d_model, cfg.num_heads, cfg.ffn_dim)
    assert (spec.ln_positions, spec.use_head_scale, spec.dropout, spec.self_length) == ("subln", True, 0.25, 7)
    assert spec.decode_kernels == "xla"
    # per-side values override the config's
    assert layers.TransformerSpec.from_config(cfg, num_heads=1).num_heads == 1
