"""tools/binding_probe.py: attention captured from the model as it runs, word positions, caption swaps, the
EVAL.md section; on tiny random-weight models."""

import json
import zlib

import jax
import numpy as np
import pytest

from dalle.data import schema as S
from dalle.data import shapes as shapes_lib
from dalle.modeling import layers
from dalle.modeling import model as model_lib
from dalle.modeling import presets
from tests import data_helpers
from tools import binding_probe as bp

TEXT_LENGTH = 48


class FakeVocab:
    """Whitespace words -> ids, words longer than 5 characters as two pieces (so word and token positions differ),
    ids stable across calls; pad 0, EOS 1 like the project's sentencepiece vocabularies."""

    eos_id = 1

    def __init__(self, size: int = 64):
        self.size = size

    def pieces(self, word: str) -> list[str]:
        return [word[:3], word[3:]] if len(word) > 5 else [word]

    def encode(self, text: str) -> list[int]:
        return [3 + zlib.crc32(p.encode()) % (self.size - 3) for w in text.split() for p in self.pieces(w)]


def multi_data() -> dict:
    """The multi-object world of configs/shapes_tiny.py:multi (1-3 objects, 32 px, the default held-out pairs)."""
    d = S.data_defaults().to_dict()
    d.update(max_objects=3, image_size=32, max_text_length=TEXT_LENGTH, lowercase=True)
    return d


def tiny_model(kind: str, text_length: int = TEXT_LENGTH, image_length: int = 64):
    """A 2-layer random-weight model of `kind` over 64 text ids and 64 codes (8x8 like the 32 px world)."""
    sizes = dict(text_vocab_size=64, image_vocab_size=64, max_text_length=text_length, image_length=image_length)
    if kind == "decoder_only":
        cfg = presets.tiny_decoder_only(**sizes)
        cfg.d_model, cfg.num_heads, cfg.ffn_dim, cfg.num_layers = 32, 2, 48, 2
    else:
        cfg = presets.micro(**sizes)
    cfg.scan_layers = False
    model = model_lib.build_model(cfg)
    return model, model_lib.random_params(model)


def batch(model, seed: int = 0, text_tokens: int = 9):
    rs = np.random.RandomState(seed)
    text = np.zeros((3, model.max_text_length), np.int32)
    text[:, :text_tokens] = rs.randint(3, 64, (3, text_tokens))
    text[:, text_tokens] = 1
    return text, rs.randint(0, model.image_vocab_size, (3, model.image_length)).astype(np.int32)


# ----------------------------------------------------------------------------------------------------------------
# Attention capture
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["decoder_only", "dalle_bart"])
def test_captured_attention_is_the_models_softmax_over_keys(kind):
    model, params = tiny_model(kind)
    text, codes = batch(model)
    _, att = bp.make_forward(model, True)(params, text, codes)
    att = np.asarray(att)
    lt, li = model.max_text_length, model.image_length
    layers_n = model.config.num_layers if kind == "decoder_only" else model.config.decoder_layers
    assert att.shape == (3, layers_n, li, lt + li if kind == "decoder_only" else lt)
    np.testing.assert_allclose(att.sum(-1), 1.0, atol=1e-5)  # per query, mean over heads of softmaxes
    assert np.abs(att[..., 10:lt]).max() == 0  # text padding (after 9 words + EOS) is masked
    if kind == "decoder_only":  # the rows are image queries: query i sees image keys up to its own position
        for i in (0, 17, li - 2):
            assert np.abs(att[:, :, i, lt + i + 1:]).max() == 0
            assert att[:, :, i, lt + i].min() > 0


@pytest.mark.parametrize("kind", ["decoder_only", "dalle_bart"])
def test_recording_leaves_the_model_outputs_bit_identical(kind):
    model, params = tiny_model(kind, text_length=12, image_length=16)
    text, codes = batch(model, seed=1)
    before = np.asarray(jax.jit(model.logits)(params, {"text_tokens": text, "image_tokens": codes}))
    original = layers.attention_kernel
    plain, _ = bp.make_forward(model, False)(params, text, codes)
    recorded, att = bp.make_forward(model, True)(params, text, codes)
    assert att is not None
    assert layers.attention_kernel is original  # after the probe, the default path is the very same code
    np.testing.assert_array_equal(np.asarray(recorded), np.asarray(plain))
    lse = jax.nn.logsumexp(before, axis=-1)
    np.testing.assert_allclose(np.asarray(plain), lse - np.take_along_axis(before, codes[..., None], -1)[..., 0],
                               rtol=1e-6, atol=1e-6)


def test_record_attention_restores_the_kernel_on_error():
    original = layers.attention_kernel
    with pytest.raises(RuntimeError):
        with bp.record_attention([]):
            assert layers.attention_kernel is not original
            raise RuntimeError("boom")
    assert layers.attention_kernel is original


def test_scanned_models_are_refused_by_make_forward():
    model, _ = tiny_model("decoder_only")
    cfg = model.config.to_dict()
    cfg["scan_layers"] = True
    from ml_collections import ConfigDict
    with pytest.raises(ValueError, match="unrolled"):
        bp.make_forward(model_lib.build_model(ConfigDict(cfg)), True)


def test_shares_partition_the_attention():
    words = "a small red star to the left of two blue round dots, black background".split()
    vocab = FakeVocab()
    ids = vocab.encode(" ".join(words))
    positions = bp.word_token_positions(words, vocab, ids)
    red, blue = bp.find_phrases(words, S.data_defaults().colors, S.data_defaults().shapes)
    lt, li = 24, 5
    rows = np.random.RandomState(0).rand(2, 3, lt + li)
    rows /= rows.sum(-1, keepdims=True)
    shares = bp.attention_shares(rows, red, [blue], positions, lt)
    np.testing.assert_allclose(shares.sum(-1), 1.0, atol=1e-6)
    mean = rows.mean(1)
    np.testing.assert_allclose(shares[:, 0], mean[:, positions[2]].sum(-1))  # "red"
    np.testing.assert_allclose(shares[:, 1], mean[:, positions[3]].sum(-1))  # "star"
    np.testing.assert_allclose(shares[:, 3], mean[:, positions[10] + positions[11]].sum(-1))  # "round dots,"
    np.testing.assert_allclose(shares[:, 5], mean[:, lt:].sum(-1))
    bind = bp.binding_index(shares, 1)
    np.testing.assert_allclose(bind[:, 0], shares[:, 0] / (shares[:, 0] + shares[:, 2]))
    assert bp.binding_index(shares, 0) is None


# ----------------------------------------------------------------------------------------------------------------
# Words and their token positions
# ----------------------------------------------------------------------------------------------------------------
def test_word_positions_pick_each_objects_colour_and_shape_tokens():
    words = "there are two little turquoise triangles, a big violet rhombus and a red disk on a black background"
    words = words.split()
    vocab = FakeVocab()
    positions = bp.word_token_positions(words, vocab, vocab.encode(" ".join(words)))
    # words longer than 5 characters take two tokens: "little", "turquoise", "triangles," and "violet", "rhombus"
    assert positions[:6] == [[0], [1], [2], [3, 4], [5, 6], [7, 8]]
    phrases = bp.find_phrases(words, S.data_defaults().colors, S.data_defaults().shapes)
    assert [(p.color, p.shape, p.color_word, p.shape_words, p.plural) for p in phrases] == [
        ("cyan", "triangle", 4, (5,), True), ("purple", "diamond", 8, (9,), False),
        ("red", "circle", 12, (13,), False)]  # "black background" is not an object
    tokens = [[t for w in (p.color_word, *p.shape_words) for t in positions[w]] for p in phrases]
    assert tokens == [[5, 6, 7, 8], [11, 12, 13, 14], [17, 18]]


def test_word_positions_refuse_a_tokenizer_that_does_not_split_on_words():
    vocab = FakeVocab()
    with pytest.raises(ValueError, match="word positions"):
        bp.word_token_positions(["a", "red", "star"], vocab, vocab.encode("a red star")[::-1])


def test_every_object_of_generated_multi_object_captions_has_exactly_one_phrase():
    world = shapes_lib.ShapesWorld.from_config(multi_data())
    for split in ("validation", "zero_shot"):
        for i in range(150):
            scene = world.scene(split, i)
            words = world.caption(scene, world.rng(split, i, stream=1)).split()
            found = [(p.color, p.shape) for p in bp.find_phrases(words, world.colors, world.shapes)]
            assert sorted(set(found)) == sorted({(o.color, o.shape) for o in scene.objects}), (words, scene)
            assert len(found) == len(set(found))


# ----------------------------------------------------------------------------------------------------------------
# Swaps
# ----------------------------------------------------------------------------------------------------------------
def test_a_swap_changes_exactly_one_word_of_the_right_phrase():
    words = "a small red star to the left of two blue triangles, black background".split()
    red, blue = bp.find_phrases(words, S.data_defaults().colors, S.data_defaults().shapes)
    for phrase, attribute, value, index, new in [(red, "color", "green", 2, "green"),
                                                 (red, "shape", "square", 3, "square"),
                                                 (blue, "color", "purple", 9, "purple"),
                                                 (blue, "shape", "cross", 10, "crosses,")]:
        swapped = bp.swap_caption(words, phrase, attribute, value).split()
        assert len(swapped) == len(words)
        assert [k for k, (a, b) in enumerate(zip(words, swapped)) if a != b] == [index]
        assert swapped[index] == new
    with pytest.raises(ValueError, match="attribute"):
        bp.swap_caption(words, red, "size", "large")


def test_a_two_word_noun_is_swapped_whole():
    words = "a picture of 2 green round dots at the top".split()
    (green,) = bp.find_phrases(words, S.data_defaults().colors, S.data_defaults().shapes)
    assert bp.swap_caption(words, green, "shape", "star") == "a picture of 2 green stars at the top"


def test_alternatives_never_make_a_held_out_pair():
    world = shapes_lib.ShapesWorld.from_config(multi_data())
    rng = np.random.default_rng(0)
    colours = {bp.alternative(world, rng, "color", "blue", "star") for _ in range(200)}
    shapes = {bp.alternative(world, rng, "shape", "red", "circle") for _ in range(200)}
    assert "red" not in colours and "blue" not in colours and len(colours) == 6  # 8 colours less blue and red
    assert shapes == {"square", "triangle", "cross", "diamond"}  # not circle, not the held-out star


# ----------------------------------------------------------------------------------------------------------------
# The whole probe
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["decoder_only", "dalle_bart"])
def test_measure_on_a_tiny_model(kind):
    model, params = tiny_model(kind)
    r = bp.measure(model, params, FakeVocab(), data_helpers.fake_encoder, multi_data(), prompts_per_split=6)
    assert set(r["groups"]) >= {"seen", "held_out"} and r["layers"] == 2
    for o in r["objects"]:
        np.testing.assert_allclose(np.sum(o["shares"], -1), 1.0, atol=1e-4)
        if kind == "dalle_bart":
            assert np.allclose(np.asarray(o["shares"])[:, 5], 0)  # cross-attention has no image keys
        swapped = [o["swapped_captions"][a].split() for a in ("color", "shape")]
        true = o["caption"].split()
        assert sum(a != b for a, b in zip(true, swapped[0])) == 1
    held = [o for o in r["objects"] if o["group"] == "held_out"]
    assert held and all(f"{o['object']['color']} {o['object']['shape']}" in S.data_defaults().held_out_pairs
                        for o in held)
    json.dumps(r)  # the results file is JSON
    text = bp.render([("tiny", r)], "cmd", 6)
    assert "| 1 | zero_shot, held-out pairs |" in text and "### What the numbers show" in text


# ----------------------------------------------------------------------------------------------------------------
# The section
# ----------------------------------------------------------------------------------------------------------------
def _group(own: float, rise: float, nll: float, se: float = 0.01, shape_rise: tuple | None = None,
           binding: float = 0.7) -> dict:
    """A summary entry of bp.summarize's layout with chosen numbers (2 layers)."""
    shares = [own, own, 0.05, 0.05, 0.8 - 2 * own, 0.1]
    rises = {"color": [rise, se], "shape": list(shape_rise or (rise, se))}
    return {"objects": 50, "shares": [shares, shares], "bound_objects": 20,
            "binding": [[binding, 0.5], [0.5, 0.5]], "binding_se": [[se, se], [se, se]],
            "shares_over_layers": {k: [v, se] for k, v in zip(bp.SHARES, shares)},
            "binding_over_layers": [[binding, se], [0.5, se]],
            "nll": {"true": [nll, se], **{a: [nll + r[0], se] for a, r in rises.items()}},
            "nll_rise": rises,
            "nll_first": {"true": [nll, se], **{a: [nll + r[0], se] for a, r in rises.items()}},
            "nll_first_rise": rises}


def test_analysis_sentences_follow_the_numbers():
    steered = {"kind": "decoder_only", "layers": 2, "skipped": [],
               "groups": {"seen": _group(0.2, 2.0, 1.0), "held_out": _group(0.2, 0.01, 3.0, binding=0.5)}}
    sentences = bp.analysis([("m", steered)])
    assert 3 <= len(sentences) <= 6
    text = " ".join(sentences)
    assert "0.01 ± 0.01 is no clear rise at all, against 2.00 ± 0.01" in text
    assert "validation objects prefer their own colour word at layer 0 (up to 0.70) and held-out ones at no layer" \
        in text
    assert "attend to their own words about as much as seen objects' do or more" in text
    assert "colour and shape words steer their codes less than for seen pairs" in text
    assert "less likely than seen pairs' even under the true caption: attention finds" in text
    same = dict(steered, groups={"seen": _group(0.2, 2.0, 1.0), "held_out": _group(0.05, 2.0, 1.0)})
    text = " ".join(bp.analysis([("m", same)]))
    assert "attend less to their own words" in text and "both words steer their codes at least as much" in text
    assert "about as likely as seen pairs'" in text and "5.0% vs 20.0% (lower than)" in text
    assert "attention finds" not in text
    # One object per caption (the one-object world): no preference to report, so no sentence about it.
    alone = {k: dict(g, binding=None, binding_se=None) for k, g in steered["groups"].items()}
    text = " ".join(bp.analysis([("m", dict(steered, groups=alone))]))
    assert "own-word preference" not in text and "Swapping the object's colour" in text


def test_a_rise_within_noise_of_zero_counts_as_steering_less():
    """A held-out rise that is not clearly above zero, where the seen one is, is never called 'as much'."""
    groups = {"seen": _group(0.2, 0.5, 1.0, shape_rise=(0.06, 0.01)),
              "held_out": _group(0.2, 0.5, 1.0, shape_rise=(0.03, 0.02))}
    text = " ".join(bp.analysis([("m", {"kind": "dalle_bart", "layers": 2, "skipped": [], "groups": groups})]))
    assert "shape swap 0.03 ± 0.02 is no clear rise at all, against 0.06 ± 0.01" in text
    assert "their shape word steers their codes less than for seen pairs" in text


def test_section_goes_right_after_the_multi_object_curve(tmp_path):
    target = tmp_path / "EVAL.md"
    target.write_text("# Evaluation\n\n<!-- eval:shapes-multi-curve -->\ncurve\n<!-- /eval:shapes-multi-curve -->\n"
                      "<!-- eval:emoji -->\nemoji\n<!-- /eval:emoji -->\n")
    bp.write_section("first", str(target))
    bp.write_section("second", str(target))
    text = target.read_text()
    assert text.count("<!-- eval:composition-binding -->") == 1 and "first" not in text
    assert ("<!-- /eval:shapes-multi-curve -->\n<!-- eval:composition-binding -->\nsecond\n"
            "<!-- /eval:composition-binding -->\n<!-- eval:emoji -->") in text
    bp.write_section("other models", str(target), section="binding-b", after="composition-binding")
    text = target.read_text()
    assert ("<!-- /eval:composition-binding -->\n<!-- eval:binding-b -->\nother models\n"
            "<!-- /eval:binding-b -->\n<!-- eval:emoji -->") in text and "second" in text


def test_render_takes_a_title():
    assert bp.render([], "cmd", 5, title="Another set").startswith("## Another set\n")
    assert bp.render([], "cmd", 5).startswith(f"## {bp.TITLE}\n")


def test_checkpoint_arguments(tmp_path):
    assert bp.parse_checkpoint(f"name={tmp_path}") == ("name", str(tmp_path))
    assert bp.parse_checkpoint(str(tmp_path)) == (tmp_path.name, str(tmp_path))
    with pytest.raises(ValueError, match="not a directory"):
        bp.parse_checkpoint(f"x={tmp_path}/missing")
