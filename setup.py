"""Build of diffcomb's native modules, driven by environment variables.

  diffcomb._C       csrc/bindings.cpp + csrc/common/*.cpp + csrc/<family>/*.cpp but bind_cuda.cpp
                    (cpu.cpp, bind.cpp, and a family's further CPU files such as cpu_<part>.cpp)
                    (C++17, -O3, OpenMP over the batch)
  diffcomb._C_cuda  csrc/bindings_cuda.cpp + csrc/<family>/{*.cu,bind_cuda.cpp}, linked with the
                    static CUDA runtime, so importing it needs no GPU or driver;
                    built when nvcc is found (or CUDA_HOME is set).

Variables:
  DIFFCOMB_CUDA       "0" skips CUDA, "1" requires it, unset: build it if nvcc is found
  DIFFCOMB_CUDA_ARCH  ";"-separated compute capabilities, e.g. "80;90" (default
                      "75;80;90": machine code for each, plus PTX for the newest)
  DEBUG               "1" builds with -O0 -g
  CXX                 the C++ compiler (default: c++)

No torch at build time: the modules include only pybind11 and the C++/CUDA
standard headers, so one build serves every torch version. Compilation runs in
parallel through one ninja file for both modules.
"""

import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
CSRC = ROOT / "csrc"
DEBUG = os.environ.get("DEBUG", "0") == "1"
DEFAULT_CUDA_ARCH = "75;80;90"


def log(message):
    print(f"[diffcomb setup] {message}", file=sys.stderr, flush=True)


def is_cuda_home(path):
    return path is not None and (path / "bin" / "nvcc").exists() and (path / "include" / "cuda_runtime.h").exists()


def find_cuda_home():
    """CUDA_HOME / CUDA_PATH, else the toolkit around nvcc on PATH, else
    /usr/local/cuda (where a bare nvcc wrapper script points)."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            return Path(os.environ[var])
    nvcc = shutil.which("nvcc")
    if nvcc:
        home = Path(nvcc).resolve().parent.parent
        if is_cuda_home(home):
            return home
    default = Path("/usr/local/cuda")
    return default if is_cuda_home(default) else None


def cuda_setting():
    """The CUDA home to build with, or None; prints the decision."""
    choice = os.environ.get("DIFFCOMB_CUDA", "").strip()
    if choice == "0":
        log("DIFFCOMB_CUDA=0: building the CPU module only")
        return None
    home = find_cuda_home()
    if not is_cuda_home(home):
        if choice == "1":
            raise RuntimeError("DIFFCOMB_CUDA=1 but nvcc was not found: set CUDA_HOME or put nvcc on PATH")
        log("nvcc not found: building the CPU module only (CUDA tensors will raise a clear error)")
        return None
    log(f"building the CUDA module with {home / 'bin' / 'nvcc'}")
    return home


def gencode_flags():
    archs = [a.strip().replace(".", "") for a in os.environ.get("DIFFCOMB_CUDA_ARCH", DEFAULT_CUDA_ARCH).split(";")]
    archs = [a for a in archs if a]
    if not archs:
        raise RuntimeError("DIFFCOMB_CUDA_ARCH is empty")
    flags = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]
    newest = max(archs, key=lambda a: int("".join(ch for ch in a if ch.isdigit())))
    flags.append(f"-gencode=arch=compute_{newest},code=compute_{newest}")
    log(f"CUDA architectures: {';'.join(archs)} (+ PTX for {newest})")
    return flags


def sources(patterns):
    found = []
    for pattern in patterns:
        found += sorted(p.relative_to(ROOT).as_posix() for p in CSRC.glob(pattern))
    return found


def ninja_escape(path):
    return str(path).replace("$", "$$").replace(" ", "$ ").replace(":", "$:")


class NativeExtension(Extension):
    """An extension whose objects and link line come from the ninja file."""

    def __init__(self, name, cxx_sources, cuda_sources=(), cuda_home=None):
        super().__init__(name, sources=list(cxx_sources) + list(cuda_sources))
        self.cxx_sources = list(cxx_sources)
        self.cuda_sources = list(cuda_sources)
        self.cuda_home = cuda_home


class NinjaBuildExt(build_ext):
    def remove_stale_modules(self):
        """A module this build does not make (the CUDA one, with DIFFCOMB_CUDA=0 or no nvcc) must not
        survive from an earlier build in build/lib or in the source tree: it would ship, or be
        imported, compiled from older sources."""
        if any(ext.name == "diffcomb._C_cuda" for ext in self.extensions):
            return
        for folder in (Path(self.build_lib) / "diffcomb", ROOT / "diffcomb"):
            for stale in folder.glob("_C_cuda*.so"):
                log(f"removing {stale} (not built by this configuration)")
                stale.unlink()

    def build_extensions(self):
        import pybind11

        self.remove_stale_modules()

        ninja = shutil.which("ninja")
        if ninja is None:
            try:
                import ninja as ninja_pkg

                ninja = os.path.join(ninja_pkg.BIN_DIR, "ninja")
            except ImportError as exc:
                raise RuntimeError("diffcomb's build needs ninja (pip install ninja)") from exc
        cxx = os.environ.get("CXX", "c++")
        opt = ["-O0", "-g"] if DEBUG else ["-O3"]
        includes = [f"-I{CSRC}", f"-I{pybind11.get_include()}", f"-I{sysconfig.get_paths()['include']}"]
        cxxflags = ["-std=c++17", "-fPIC", "-fvisibility=hidden", "-Wall", "-Wextra", *opt, *includes]
        build_dir = Path(self.build_temp).resolve()
        build_dir.mkdir(parents=True, exist_ok=True)
        lines = [
            "ninja_required_version = 1.3",
            f"cxx = {cxx}",
            "rule cxx",
            "  command = $cxx -MMD -MF $out.d $flags -c $in -o $out",
            "  depfile = $out.d",
            "  deps = gcc",
            "  description = C++ $in",
            "rule nvcc",
            "  command = $nvcc -MD -MF $out.d $flags -c $in -o $out",
            "  depfile = $out.d",
            "  deps = gcc",
            "  description = CUDA $in",
            "rule link",
            "  command = $cxx -shared $in -o $out $ldflags",
            "  description = link $out",
        ]
        for ext in self.extensions:
            output = Path(self.get_ext_fullpath(ext.name)).resolve()
            output.parent.mkdir(parents=True, exist_ok=True)
            objects = []
            ldflags = []
            flags = list(cxxflags)
            if ext.cuda_home is not None:
                flags.append(f"-I{ext.cuda_home / 'include'}")
                lib = ext.cuda_home / "lib64"
                ldflags += [f"-L{lib}", "-lcudart_static", "-ldl", "-lrt", "-lpthread"]
            else:
                flags.append("-fopenmp")
                ldflags.append("-fopenmp")
            if sys.platform == "darwin":
                ldflags += ["-undefined", "dynamic_lookup"]
            for src in ext.cxx_sources:
                obj = build_dir / ext.name / (Path(src).relative_to("csrc").as_posix().replace("/", "_") + ".o")
                objects.append(obj)
                lines.append(f"build {ninja_escape(obj)}: cxx {ninja_escape(ROOT / src)}")
                lines.append(f"  flags = {' '.join(shlex.quote(f) for f in flags)}")
            if ext.cuda_sources:
                nvcc = ext.cuda_home / "bin" / "nvcc"
                nvflags = [
                    "-std=c++17",
                    *(["-O0", "-g", "-lineinfo"] if DEBUG else ["-O3", "-lineinfo"]),
                    "--expt-relaxed-constexpr",
                    "-Xcompiler",
                    "-fPIC,-fvisibility=hidden",
                    f"-ccbin={cxx}",
                    *includes,
                    *gencode_flags(),
                ]
                for src in ext.cuda_sources:
                    obj = build_dir / ext.name / (Path(src).relative_to("csrc").as_posix().replace("/", "_") + ".o")
                    objects.append(obj)
                    lines.append(f"build {ninja_escape(obj)}: nvcc {ninja_escape(ROOT / src)}")
                    lines.append(f"  nvcc = {ninja_escape(nvcc)}")
                    lines.append(f"  flags = {' '.join(shlex.quote(f) for f in nvflags)}")
            lines.append(f"build {ninja_escape(output)}: link {' '.join(ninja_escape(o) for o in objects)}")
            lines.append(f"  ldflags = {' '.join(shlex.quote(f) for f in ldflags)}")
        (build_dir / "build.ninja").write_text("\n".join(lines) + "\n")
        jobs = os.environ.get("MAX_JOBS")
        command = [ninja, "-C", str(build_dir)] + (["-j", jobs] if jobs else [])
        log(f"running {' '.join(command)}")
        subprocess.run(command, check=True)


def extensions():
    exts = [
        NativeExtension(
            "diffcomb._C",
            [s for s in sources(["bindings.cpp", "*/*.cpp"]) if not s.endswith("/bind_cuda.cpp")],
        )
    ]
    cuda_home = cuda_setting()
    if cuda_home is not None:
        exts.append(
            NativeExtension(
                "diffcomb._C_cuda",
                sources(["bindings_cuda.cpp", "*/bind_cuda.cpp"]),
                sources(["*/*.cu"]),
                cuda_home=cuda_home,
            )
        )
    return exts


setup(ext_modules=extensions(), cmdclass={"build_ext": NinjaBuildExt})
