"""Builds the native byte sampler (a plain shared library, not a Python extension) next to
the agent. Without a working C compiler the install still succeeds: the reason is kept in
memtop/agent/native/build-error.txt and sampled mode reports it."""

import os
import shlex
import subprocess

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py

SOURCE = os.path.join("memtop", "agent", "native", "sampler.c")
LIBRARY = "libmemtopsampler.so"
ERROR_FILE = "build-error.txt"
FLAGS = ["-O2", "-fPIC", "-shared", "-fno-strict-aliasing", "-Wall"]


def build_sampler(out_dir):
    """Compile sampler.c into out_dir; on failure write the reason next to it instead."""
    os.makedirs(out_dir, exist_ok=True)
    library = os.path.join(out_dir, LIBRARY)
    error_file = os.path.join(out_dir, ERROR_FILE)
    compiler = shlex.split(os.environ.get("CC") or "cc")
    command = [*compiler, *FLAGS, "-o", library + ".tmp", os.path.abspath(SOURCE)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        problem = (
            None if done.returncode == 0 else (done.stderr.strip() or f"exit {done.returncode}")
        )
    except (OSError, subprocess.SubprocessError) as exc:
        problem = str(exc)
    if problem is None:
        os.replace(library + ".tmp", library)
        if os.path.exists(error_file):
            os.remove(error_file)
        return
    for stale in (library + ".tmp", library):  # an older build must not pass for this one
        if os.path.exists(stale):
            os.remove(stale)
    with open(error_file, "w", encoding="utf-8") as f:
        last = problem.splitlines()[-1] if problem else "unknown"
        f.write(f"the native sampler was not built ({compiler[0]} failed: {last}); ")
        f.write("reinstall with a C compiler\n")


class BuildPyWithSampler(build_py):
    """build_py, plus the sampler library: into the source tree for editable installs."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            build_sampler(os.path.dirname(SOURCE))
        else:
            build_sampler(os.path.join(self.build_lib, os.path.dirname(SOURCE)))


def platform_wheel():
    """bdist_wheel for a wheel tagged `py3-none-<platform>`, never `py3-none-any`: the
    library is native code of this platform, loaded into any CPython 3.9+ without
    Python.h. None where no bdist_wheel exists (no wheel can be built there anyway)."""
    try:
        from setuptools.command.bdist_wheel import bdist_wheel
    except ImportError:  # setuptools before 70.1: the wheel package's
        try:
            from wheel.bdist_wheel import bdist_wheel
        except ImportError:
            return None

    class PlatformWheel(bdist_wheel):
        def get_tag(self):
            return ("py3", "none", super().get_tag()[2])

    return PlatformWheel


class PlatformDistribution(Distribution):
    """Holds native code (the library), so it installs where platform code goes."""

    def has_ext_modules(self):
        return True


if __name__ == "__main__":
    commands = {"build_py": BuildPyWithSampler}
    wheel = platform_wheel()
    if wheel is not None:
        commands["bdist_wheel"] = wheel
    setup(cmdclass=commands, distclass=PlatformDistribution)
