"""Packages of the `kes` distribution: each top-level folder installed under the kes namespace.

pyproject.toml holds the metadata; this file only maps folders to names (`streams/` is
`kes.streams`, `streams/core/` is `kes.streams.core`, ...), which pyproject.toml cannot compute.
"""

from setuptools import find_packages, setup

FOLDERS = ("streams", "topology", "stores", "schemas", "examples")

setup(
    packages=[
        f"kes.{name}"
        for folder in FOLDERS
        for name in (folder, *(f"{folder}.{sub}" for sub in find_packages(folder)))
    ],
    package_dir={f"kes.{folder}": folder for folder in FOLDERS},
)
