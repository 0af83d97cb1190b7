"""dalle.modeling.param_check: one error listing every difference from the expected params."""

import numpy as np
import pytest

from dalle.modeling import param_check


def test_agreeing_shapes_give_no_lines():
    assert param_check.mismatch_lines({"a": (2, 3)}, {"a": (2, 3)}) == []


def test_every_kind_of_difference_is_listed_once():
    want = {"enc/w": (3, 3), "enc/b": (3,), "dec/w": (4,)}
    have = {"enc/w": (3, 2), "dec/w": (4,), "extra/x": (1,)}
    assert param_check.mismatch_lines(want, have, "keys") == [
        "missing keys (1): enc/b",
        "unexpected keys (1): extra/x",
        "wrong shape (1): enc/w: (3, 2) != expected (3, 3)",
    ]


def test_check_param_shapes_names_model_and_source():
    expected = {"conv": {"w": (2, 2), "b": (2,)}}
    params = {"conv": {"w": np.zeros((2, 2))}, "norm": {"scale": np.ones(2)}}
    with pytest.raises(param_check.ParamMismatchError) as e:
        param_check.check_param_shapes(params, expected, "VQGAN", what="params of 'ckpt'")
    assert str(e.value).splitlines() == ["params of 'ckpt' do not match the VQGAN config:",
                                         "  missing (1): conv/b", "  unexpected (1): norm/scale"]
    param_check.check_param_shapes({"conv": {"w": np.zeros((2, 2)), "b": np.zeros(2)}}, expected, "VQGAN")
