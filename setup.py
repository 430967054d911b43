"""The optional C accelerator of CSV exports; everything else is in pyproject.toml.

optional=True: where no C compiler or Python headers exist, the build of the
extension fails with a warning and the package installs without it (CSV
exports then use the pure-Python encoder, with the same output).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "auditlog.exports._csvfast",
            ["auditlog/exports/_csvfast.c"],
            optional=True,
        )
    ]
)
