"""examples/generate.ipynb runs top to bottom (nbclient, a real kernel) on a tiny random-weight model."""
# bazel: manual  (starts a Jupyter kernel; CI runs it with pytest --runslow)

from __future__ import annotations

import os

import pytest

from tests import tiny_pipeline

NOTEBOOK = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "generate.ipynb")


@pytest.mark.slow
def test_the_example_notebook_executes(tmp_path, monkeypatch):
    import jax
    import nbformat
    from nbclient import NotebookClient

    from dalle import model_dir
    from dalle.modeling import model as model_lib

    config = tiny_pipeline.tiny_config(str(tmp_path / "tiny"))
    params = model_lib.build_model(config.model).init(jax.random.PRNGKey(0))
    model = model_dir.save_model(str(tmp_path / "tiny" / "model"), params, config)
    monkeypatch.setenv("DALLE_MODEL", model)
    monkeypatch.setenv("DALLE_CLIP", str(tmp_path / "no-clip"))
    repo = os.path.dirname(os.path.dirname(NOTEBOOK))
    monkeypatch.setenv("PYTHONPATH", repo + os.pathsep + os.environ.get("PYTHONPATH", ""))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    pngs = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(pngs) == 2  # the grid and the decoded codes
