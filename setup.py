"""Build script for fastconv's native extension (fastconv._C).

Environment:
  FASTCONV_CUDA=auto|0|1   CUDA sources: auto (default) builds them when torch is a CUDA build
                           (torch.version.cuda) and a CUDA toolkit is found; 1 requires them.
  TORCH_CUDA_ARCH_LIST     CUDA architectures (default "8.0;8.6;9.0").
  MAX_JOBS                 parallel compile jobs (ninja).
  FASTCONV_DEBUG=1         -O0 -g build.
  FASTCONV_SANITIZE=1      AddressSanitizer + UndefinedBehaviorSanitizer build (-O1 -g); load it in
                           an interpreter with libasan preloaded (`make sanitize-ops` does).
  FASTCONV_SIMT=1|0        fastconv._simt, the CUDA kernels compiled by g++ for the SIMT emulator
                           (csrc/common/simt.h) and exposed as torch.ops.fastconv_simt.* for the
                           tests (default 1; 0 skips it, e.g. for a release wheel).

Per-ISA kernel files (*_avx512.cpp, *_avx2.cpp, *_default.cpp) include no torch headers and are
compiled here with their own ISA flags, then linked into the extension; the CPU picks one at
run time. Nothing is built with -march=native, so a wheel runs on any x86-64 CPU.

Install with `pip install --no-build-isolation .`: an isolated build would fetch a multi-GB
CUDA torch to build against.
"""
import concurrent.futures
import glob
import os
import sys

from setuptools import find_packages, setup

import torch
from torch.utils import cpp_extension

ROOT = os.path.dirname(os.path.abspath(__file__))
VERSION = "0.1.0"

ISA_FLAGS = {
    "avx512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx2", "-mfma"],
    "avx2": ["-mavx2", "-mfma"],
    "default": [],
}


def rel(paths):
    return sorted(os.path.relpath(p, ROOT) for p in paths)


def cuda_wanted():
    mode = os.environ.get("FASTCONV_CUDA", "auto").lower()
    if mode not in ("auto", "0", "1"):
        sys.exit(f"FASTCONV_CUDA must be auto, 0 or 1, got {mode!r}")
    toolkit = cpp_extension.CUDA_HOME
    if mode == "0":
        return False, "disabled (FASTCONV_CUDA=0)"
    if mode == "1":
        if torch.version.cuda is None or toolkit is None:
            sys.exit("FASTCONV_CUDA=1 needs a CUDA build of torch and a CUDA toolkit (set CUDA_HOME); "
                     f"torch.version.cuda={torch.version.cuda}, CUDA_HOME={toolkit}")
        return True, f"enabled (FASTCONV_CUDA=1, toolkit {toolkit})"
    if torch.version.cuda is not None and toolkit is not None:
        return True, f"enabled (auto: torch CUDA {torch.version.cuda}, toolkit {toolkit})"
    return False, f"disabled (auto: torch.version.cuda={torch.version.cuda}, CUDA_HOME={toolkit})"


def isa_sources():
    out = {}
    for isa in ISA_FLAGS:
        out[isa] = rel(glob.glob(os.path.join(ROOT, "csrc", "**", f"*_{isa}.cpp"), recursive=True))
    return out


def opt_flags():
    """Optimisation (and sanitizer) flags shared by the glue and the per-ISA kernel objects."""
    if os.environ.get("FASTCONV_SANITIZE") == "1":
        return ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
    return ["-O0", "-g"] if os.environ.get("FASTCONV_DEBUG") == "1" else ["-O3"]


def link_flags():
    return ["-fsanitize=address,undefined"] if os.environ.get("FASTCONV_SANITIZE") == "1" else []


class BuildExtension(cpp_extension.BuildExtension):
    """torch's BuildExtension plus the per-ISA kernel objects, compiled with their own flags."""

    def build_extensions(self):
        base = ["-std=c++17", "-fPIC", "-fvisibility=hidden", "-Wall", "-Wno-maybe-uninitialized"] + opt_flags()
        jobs = [(src, isa) for isa, sources in isa_sources().items() for src in sources]

        def compile_one(job):
            src, isa = job
            return self.compiler.compile([src], output_dir=self.build_temp, extra_postargs=base + ISA_FLAGS[isa])

        for ext in self.extensions:
            if ext.name != "fastconv._C":
                continue
            # MAX_JOBS at once (the compiler runs as a subprocess), as ninja does for the glue.
            workers = int(os.environ.get("MAX_JOBS") or os.cpu_count() or 1)
            with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
                for objects in pool.map(compile_one, jobs):
                    ext.extra_objects.extend(objects)
        super().build_extensions()


def make_extension():
    with_cuda, cuda_reason = cuda_wanted()
    glue = rel(glob.glob(os.path.join(ROOT, "csrc", "*.cpp"))
               + glob.glob(os.path.join(ROOT, "csrc", "common", "*.cpp"))
               + glob.glob(os.path.join(ROOT, "csrc", "ops", "*", "*_cpu.cpp")))
    glue = [s for s in glue if not any(s.endswith(f"_{isa}.cpp") for isa in ISA_FLAGS)]
    cuda_sources = []
    if with_cuda:
        cuda_sources = rel(glob.glob(os.path.join(ROOT, "csrc", "ops", "*", "*_cuda.cu"))
                           + glob.glob(os.path.join(ROOT, "csrc", "ops", "*", "*_cuda_glue.cpp")))
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;8.6;9.0")
    debug = os.environ.get("FASTCONV_DEBUG") == "1"
    cxx = opt_flags() + ["-Wall", "-fopenmp", f'-DFASTCONV_VERSION="{VERSION}"']
    macros = []
    # -fopenmp: at::parallel_for is a header template; without it the OpenMP pragma inside is
    # compiled out and every op runs on one thread whatever torch.set_num_threads says.
    kwargs = dict(name="fastconv._C", sources=glue + cuda_sources, include_dirs=[os.path.join(ROOT, "csrc")],
                  extra_link_args=["-fopenmp"] + link_flags())
    if with_cuda:
        macros.append(("FASTCONV_WITH_CUDA", None))
        nvcc = ["-O3", "-std=c++17", "-Xptxas=--warn-on-spills,--warn-on-local-memory-usage,--warning-as-error"]
        ext = cpp_extension.CUDAExtension(define_macros=macros,
                                          extra_compile_args={"cxx": cxx, "nvcc": nvcc}, **kwargs)
    else:
        ext = cpp_extension.CppExtension(define_macros=macros, extra_compile_args={"cxx": cxx}, **kwargs)

    print("fastconv build configuration:")
    print(f"  version        {VERSION}")
    print(f"  torch          {torch.__version__} (cuda {torch.version.cuda})")
    print(f"  CUDA           {cuda_reason}")
    if with_cuda:
        print(f"  CUDA archs     {os.environ['TORCH_CUDA_ARCH_LIST']}")
        print(f"  CUDA sources   {len(cuda_sources)}")
    sanitize = os.environ.get("FASTCONV_SANITIZE") == "1"
    print(f"  build          {'ASan + UBSan' if sanitize else 'debug' if debug else 'release'}")
    print(f"  glue sources   {len(glue)}")
    for isa, srcs in isa_sources().items():
        print(f"  {isa:<8} TUs   {len(srcs)} ({' '.join(ISA_FLAGS[isa]) or 'portable'})")
    print(f"  MAX_JOBS       {os.environ.get('MAX_JOBS', 'ninja default')}")
    return ext


def make_simt_extension():
    mode = os.environ.get("FASTCONV_SIMT", "1")
    if mode not in ("0", "1"):
        sys.exit(f"FASTCONV_SIMT must be 0 or 1, got {mode!r}")
    if mode == "0":
        return []
    # Each csrc/ops/<op>/<op>_simt.cpp includes its op's .cu and CUDA glue with
    # FASTCONV_SIMT_EMU defined; -O2 keeps the emulated kernels quick without a long compile.
    sources = rel(glob.glob(os.path.join(ROOT, "csrc", "simt", "*.cpp"))
                  + glob.glob(os.path.join(ROOT, "csrc", "ops", "*", "*_simt.cpp")))
    debug = os.environ.get("FASTCONV_DEBUG") == "1"
    cxx = (["-O0", "-g"] if debug else ["-O2"]) + ["-Wall"]
    print(f"  SIMT emulator  fastconv._simt from {len(sources)} sources")
    return [cpp_extension.CppExtension(name="fastconv._simt", sources=sources,
                                       include_dirs=[os.path.join(ROOT, "csrc")],
                                       extra_compile_args={"cxx": cxx})]


setup(
    name="fastconv",
    version=VERSION,
    description="C++/CUDA-accelerated PyTorch ops for classic CNNs",
    packages=find_packages(include=["fastconv", "fastconv.*"]),
    ext_modules=[make_extension()] + make_simt_extension(),
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    python_requires=">=3.10",
    install_requires=["torch>=2.4"],
    extras_require={"bench": ["tqdm", "matplotlib"],
                    "test": ["pytest", "hypothesis", "pytest-benchmark", "expecttest"]},
    zip_safe=False,
)
