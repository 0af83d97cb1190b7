"""A minimal config: only the mesh and training sections (used by the foundation tests and docs).

    dalle config show --config configs/example_mesh.py:model_parallel
"""

from ml_collections import ConfigDict


def get_config(arg=None):
    c = ConfigDict()
    c.name = "example"
    c.mesh = ConfigDict({"axes": ("data", "fsdp", "model"), "shape": (-1, 1, 1)})
    c.train = ConfigDict({"batch_size": 8, "num_steps": 3})
    c.train.optimizer = ConfigDict({"name": "adamw", "lr": 1e-3})
    if arg == "model_parallel":
        c.mesh.shape = (-1, 1, 2)
    elif arg not in (None, ""):
        raise ValueError(f"unknown variant {arg!r} (known: model_parallel)")
    return c
