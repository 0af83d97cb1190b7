"""A repository rule that points Bazel's Python toolchain at the project's `.venv` (made by `make setup`).

The interpreter path must be absolute, and the checkout can live anywhere, so it is computed here from the
location of the WORKSPACE file instead of being written into a BUILD file.
"""

def _venv_python_impl(ctx):
    root = ctx.path(Label("@//:WORKSPACE")).dirname
    python = "%s/.venv/bin/python3" % root
    if not ctx.path(python).exists:
        fail("%s does not exist: run `make setup` first (it creates .venv)" % python)
    ctx.file("WORKSPACE", 'workspace(name = "%s")\n' % ctx.name)
    ctx.file("BUILD", """
load("@bazel_tools//tools/python:toolchain.bzl", "py_runtime_pair")

py_runtime(
    name = "venv_py3",
    interpreter_path = "{python}",
    python_version = "PY3",
    stub_shebang = "#!{python}",
)

py_runtime_pair(name = "venv_pair", py3_runtime = ":venv_py3")

toolchain(
    name = "toolchain",
    toolchain = ":venv_pair",
    toolchain_type = "@bazel_tools//tools/python:toolchain_type",
)
""".format(python = python))

venv_python = repository_rule(
    implementation = _venv_python_impl,
    local = True,
)
