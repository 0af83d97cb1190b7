"""The sharding core on 8 fake CPU devices: rules, meshes, and sharded training equal to 1-device training."""

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from dalle import sharding
from tests import toy_sharded


def test_eight_fake_devices():
    assert jax.device_count() == 8, "tests/conftest.py sets 8 fake CPU devices"


def test_mesh_fill_and_errors():
    mesh = sharding.make_mesh(("data", "fsdp", "model"), (-1, 2, 2))
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "model": 2}
    assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)
    with pytest.raises(sharding.ShardingError, match="needs 16 devices"):
        sharding.make_mesh(("data", "model"), (4, 4))
    small = sharding.make_mesh(("data", "model"), (2, 1))  # fewer than all: the first devices
    assert small.size == 2 and list(small.devices.flat) == jax.devices()[:2]
    with pytest.raises(sharding.ShardingError, match="more than one -1"):
        sharding.make_mesh(("data", "model"), (-1, -1))
    with pytest.raises(sharding.ShardingError, match="do not divide"):
        sharding.make_mesh(("data", "model"), (-1, 3))


def test_logical_to_spec_rules():
    mesh = sharding.make_mesh(("data", "fsdp", "model"), (2, 2, 2))
    rules = sharding.DEFAULT_LOGICAL_RULES
    assert sharding.logical_to_spec(("batch", "length", "embed"), rules, mesh) == P(("data", "fsdp"))
    assert sharding.logical_to_spec(("embed", "mlp"), rules, mesh) == P("fsdp", "model")
    # Not divisible by the model axis (2): replicated instead of failing.
    assert sharding.logical_to_spec(("embed", "mlp"), rules, mesh, shape=(4, 3)) == P("fsdp")
    # A mesh axis is used once per array.
    assert sharding.logical_to_spec(("mlp", "heads"), rules, mesh) == P("model")
    with pytest.raises(sharding.ShardingError, match="'nonsense'"):
        sharding.logical_to_spec(("nonsense",), rules, mesh)


def test_param_rules_layer_stack_and_unmatched():
    params = {"stack/~/attn/query": {"w": np.zeros((3, 4, 8))}, "head": {"w": np.zeros((4, 16))}}
    rules = ((r"attn/query/w", ("embed", "heads")), (r"head/w", ("embed", "vocab")))
    axes = sharding.param_logical_axes(params, rules)
    assert axes["stack/~/attn/query"]["w"] == ("layers", "embed", "heads")
    assert axes["head"]["w"] == ("embed", "vocab")
    with pytest.raises(sharding.ShardingError, match=r"head/w"):
        sharding.param_logical_axes(params, rules[:1])
    with pytest.raises(sharding.ShardingError, match="names 2 axes"):
        sharding.param_logical_axes({"head": {"w": np.zeros((2, 2, 2, 2, 2))}}, rules)


def test_constrain_is_noop_without_mesh():
    x = np.ones((4, 4), np.float32)
    assert sharding.constrain(x, ("batch", "embed")) is x


@pytest.mark.parametrize("axes,shape", [(("data", "model"), (4, 2)), (("data", "fsdp", "model"), (2, 2, 2))])
def test_sharded_training_equals_single_device(axes, shape):
    one = sharding.make_mesh(("data",), (1,), devices=jax.devices()[:1])
    ref, _, _ = toy_sharded.train(one)
    mesh = sharding.make_mesh(axes, shape)
    got, shardings, live = toy_sharded.train(mesh)
    for path, a in sharding.to_mapping(ref).items():
        np.testing.assert_allclose(sharding.to_mapping(got)[path], a, atol=1e-5, rtol=1e-5, err_msg=path)
    # Each param sits where the rules say.
    expected = sharding.param_specs(ref, toy_sharded.PARAM_RULES, sharding.DEFAULT_LOGICAL_RULES, mesh)
    for (path, arr), spec in zip(sharding.to_mapping(live).items(), sharding.to_mapping(expected).values()):
        assert isinstance(arr.sharding, NamedSharding)
        assert arr.sharding.spec == spec, path
    # The layer-stacked query kernel: leading `layers` axis unsharded, embed on fsdp (when present), heads on model.
    q = [a for p, a in sharding.to_mapping(live).items() if p.endswith("attn/query/w")][0]
    assert q.shape[0] == toy_sharded.LAYERS
    assert q.sharding.spec == P(None, "fsdp" if "fsdp" in axes else None, "model")


def test_opt_state_shardings_follow_params():
    import optax

    mesh = sharding.make_mesh(("data", "model"), (4, 2))
    params = {"head": {"w": np.zeros((4, 16), np.float32)}}
    sh = sharding.param_shardings(params, ((r"head/w", ("embed", "vocab")),), sharding.DEFAULT_LOGICAL_RULES, mesh)
    state = jax.eval_shape(optax.adam(1e-3).init, params)
    osh = sharding.derived_state_shardings(state, params, sh, mesh)
    assert osh[0].mu["head"]["w"].spec == P(None, "model")
    assert osh[0].count.spec == P()


def test_rules_from_config_puts_each_configs_rules_before_the_defaults():
    from ml_collections import ConfigDict

    model = ConfigDict({"mesh": {"logical_rules": (("embed", None), ("batch", ["data"]))}})  # JSON gives lists
    rules = sharding.rules_from_config(model)
    assert rules == (("embed", None), ("batch", ("data",))) + sharding.DEFAULT_LOGICAL_RULES
    for bare in (ConfigDict({"model": {"kind": "toy"}}), {"mesh": {"axes": ("data",)}}, None):
        assert sharding.rules_from_config(bare) == sharding.DEFAULT_LOGICAL_RULES
    mesh = sharding.make_mesh(("data", "fsdp", "model"), (2, 2, 2))
    assert sharding.logical_to_spec(("embed",), rules, mesh) == P()  # the config's rule won over ("embed", "fsdp")
    job = {"mesh": {"logical_rules": (("embed", "model"),)}}
    assert sharding.logical_to_spec(("embed",), sharding.rules_from_config(job, model), mesh) == P("model")


def test_batch_shards_counts_the_mesh_axes_batch_maps_to():
    mesh = sharding.make_mesh(("data", "fsdp", "model"), (2, 2, 2))
    rules = sharding.DEFAULT_LOGICAL_RULES
    assert sharding.batch_shards(mesh, rules) == 4
    assert sharding.batch_shards(mesh, (("batch", "data"),) + rules) == 2
    assert sharding.batch_shards(mesh, (("batch", None),) + rules) == 1
    assert sharding.batch_shards(mesh, (("batch", ("model", "data", "fsdp")),)) == 8
    # Axes of size 1 or missing from the mesh split nothing.
    assert sharding.batch_shards(sharding.make_mesh(("data", "model"), (4, 2)), rules) == 4
    assert sharding.batch_shards(sharding.make_mesh(("data", "fsdp"), (8, 1)), rules) == 8
    # It is exactly how batch_sharding splits rows.
    x = jax.device_put(np.zeros((8, 3)), sharding.batch_sharding(mesh, 2, (("batch", "data"),) + rules))
    assert {s.data.shape[0] for s in x.addressable_shards} == {8 // 2}


def test_path_str_joins_tree_keys():
    tree = {"decoder/~/layer": {"w": np.zeros(1)}, "list": [np.zeros(1), {"b": np.zeros(1)}]}
    paths = [sharding.path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
    assert paths == ["decoder/~/layer/w", "list/0", "list/1/b"]
