"""Writes a tiny random-weight text-to-image model (with its tokenizer and VQGAN) to DIR, for the wheel check."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(out: str) -> None:
    import jax

    from dalle import model_dir
    from dalle.modeling import model as model_lib
    from tests import tiny_pipeline

    config = tiny_pipeline.tiny_config(out)
    params = model_lib.build_model(config.model).init(jax.random.PRNGKey(0))
    print(model_dir.save_model(os.path.join(out, "model"), params, config))


if __name__ == "__main__":
    main(sys.argv[1])
