"""Build of ``modelvault._cdc`` and ``modelvault._floatcodec``; the rest is in pyproject.toml.

``_cdc`` cuts a segment with FastCDC and hashes its chunks with BLAKE3 in one call without
the GIL (``modelvault/_cdc.c``). BLAKE3 is its official C implementation, vendored
unchanged in ``modelvault/_blake3`` (version 1.3.1). On x86-64 Linux and macOS the
SSE2, SSE4.1, AVX2 and AVX-512 back ends are the hand-written assembly files, chosen at
run time by CPUID (AVX-512 needs AVX512F and AVX512VL and the OS saving ZMM state): GCC's
build of the intrinsics versions hashes at ~2.2 GB/s on an AVX2 host, the assembly at
~3.5 GB/s; on an AMD EPYC with AVX-512 (2026-12) the AVX2 assembly hashes 64 KiB chunks
at ~3.0 GB/s and the AVX-512 one at ~6.5 GB/s. Elsewhere only the portable C is built.

The extension is optional: when it cannot be built, ``modelvault.core.chunking`` uses
pyfastcdc and the ``blake3`` package instead, with the same results.

``_floatcodec`` splits floats into exponent and mantissa planes, Huffman-codes the planes
that pay and decodes them, without the GIL (``modelvault/_floatcodec.c``; docs/format.md,
section 2). Its hot loops are also compiled for BMI2 and AVX2 through GCC / Clang
``target`` attributes and chosen at import by CPUID, so the build flags stay plain -O3.
Optional too: without it the store writes no float-codec objects and reads them with
numpy and pure Python.
"""

from __future__ import annotations

import platform
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

B3 = "modelvault/_blake3"
X86_64_UNIX = platform.machine().lower() in ("x86_64", "amd64") and sys.platform != "win32"

sources = [
    "modelvault/_cdc.c",
    f"{B3}/blake3.c",
    f"{B3}/blake3_dispatch.c",
    f"{B3}/blake3_portable.c",
]
macros = []
if X86_64_UNIX:
    isas = ("sse2", "sse41", "avx2", "avx512")
    sources += [f"{B3}/blake3_{isa}_x86-64_unix.S" for isa in isas]
else:
    macros += [("BLAKE3_NO_SSE2", "1"), ("BLAKE3_NO_SSE41", "1"), ("BLAKE3_NO_AVX2", "1")]
    macros += [("BLAKE3_NO_AVX512", "1")]


class BuildExt(build_ext):
    """build_ext that also hands ``.S`` files (assembly, through the C preprocessor) to
    the C compiler, which assembles them."""

    def build_extensions(self) -> None:
        if ".S" not in self.compiler.src_extensions:
            self.compiler.src_extensions.append(".S")
        super().build_extensions()


setup(
    ext_modules=[
        Extension(
            "modelvault._cdc",
            sources=sources,
            depends=[f"{B3}/blake3.h", f"{B3}/blake3_impl.h"],
            define_macros=macros,
            extra_compile_args=["-O3"],
            optional=True,
        ),
        Extension(
            "modelvault._floatcodec",
            sources=["modelvault/_floatcodec.c"],
            extra_compile_args=["-O3"],
            optional=True,
        ),
    ],
    cmdclass={"build_ext": BuildExt},
)
