"""Build hook for the optional C accelerator; all metadata lives in pyproject.toml.

``hivemind_bus_client.protocol._speedups`` speeds up the basE91, Z85B, Z85P
and Base32 text encodings: those the standard library lacks (basE91 and our
two Z85 layouts) or implements in Python (Base32); ``benchmarks/speedups.py``
measures each against it. It is optional: where no C compiler is available
the build of the extension fails quietly and the package installs as pure
Python (see ``hivemind_bus_client.protocol.encodings``;
``HIVEMIND_PURE_PYTHON=1`` forces the pure code at run time even when the
extension is built).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "hivemind_bus_client.protocol._speedups",
            ["src/hivemind_bus_client/protocol/_speedups.c"],
            optional=True,
        )
    ],
    # the C source is needed in the sdist, not in wheels
    exclude_package_data={"hivemind_bus_client.protocol": ["*.c"]},
)
