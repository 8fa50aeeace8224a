"""Package layout only (metadata lives in pyproject.toml).

The repository keeps ``pipelines/``, ``tasks/``, ``flows/`` and ``configs/`` at its top level (as asked),
but they install as ``pxflow.pipelines`` ... so nothing generic lands in site-packages. setuptools maps
each sub-package by the longest matching ``package_dir`` prefix, so new sub-packages need no edit here.
"""

from setuptools import find_packages, setup

MAPPED = ("pipelines", "tasks", "flows", "configs")

setup(
    packages=["pxflow"] + [f"pxflow.{name}" for name in find_packages(include=[f"{m}*" for m in MAPPED])],
    package_dir={"pxflow": "pxflow", **{f"pxflow.{m}": m for m in MAPPED}},
    package_data={"pxflow.configs": ["*.yaml"]},
)
