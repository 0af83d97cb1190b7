"""`shapes`: the procedural captioned-shapes world (dalle/data/shapes.py) as the tfds dataset `captioned_shapes`
(dalle/data/builders/shapes.py). Needs no input files: the build is a pure function of the world's keys."""

from __future__ import annotations

import time
from typing import Any

from ml_collections import ConfigDict

from dalle.data.sources import DataSource, register_data_source


def make_builder(data: ConfigDict) -> Any:
    """The (unprepared) `captioned_shapes` builder of this world, under data.data_dir."""
    from dalle.data.builders import shapes as shapes_builder

    return shapes_builder.CaptionedShapes(config=shapes_builder.make_config(data), data_dir=data.data_dir or None)


def build(data: ConfigDict) -> dict[str, Any]:
    """Builds the world's dataset (reused when built); no build statistics: nothing is ever skipped."""
    from dalle.data.builders import shapes as shapes_builder

    start = time.time()
    builder = shapes_builder.build_shapes(data, data.data_dir or None)
    splits = {name: info.num_examples for name, info in builder.info.splits.items()}
    return {"source": data.source, "data_dir": builder.data_dir, "splits": splits,
            "seconds": round(time.time() - start, 2)}


register_data_source(DataSource(
    name="shapes",
    description="captioned procedural shapes (1-3 objects on a 3x3 grid) with held-out combinations",
    builder=make_builder,
    tfds_name="captioned_shapes",
    build=build,
    check="dalle.data.schema:check_shapes_world",
    image_batches="dalle.data.shapes:make_iterator",  # rendered on the fly, no build needed
))
