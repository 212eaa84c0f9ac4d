"""A runnable Triton home built from the ``nvidia-pytriton`` wheel in the Triton virtual environment.

The wheel bundles the real ``tritonserver`` and the Python backend, but not laid out as a server
install: the backend stub for our Python version has to sit next to ``libtriton_python.so``, and the
server needs the wheel's bundled libraries, the CUDA runtime and the interpreter's own libpython on
``LD_LIBRARY_PATH``. See shared/notes/triton-on-this-machine.md.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path

STUB_NAME = "triton_python_backend_stub"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class TritonSetupError(RuntimeError):
    pass


@dataclass(frozen=True)
class TritonVenv:
    """What the Triton virtual environment provides."""

    root: Path
    python_version: str
    site_packages: Path
    libdir: Path

    @property
    def bin_dir(self) -> Path:
        return self.root / "bin"

    @property
    def bundled_server(self) -> Path:
        return self.site_packages / "pytriton" / "tritonserver"

    @property
    def bundled_libs(self) -> Path:
        return self.site_packages / "nvidia_pytriton.libs"

    @property
    def cuda_runtime_lib(self) -> Path:
        return self.site_packages / "nvidia" / "cuda_runtime" / "lib"


@cache
def inspect_venv(root: Path) -> TritonVenv:
    python = root / "bin" / "python"
    if not python.exists():
        raise TritonSetupError(f"no Triton environment at {root}: run `make setup`")
    # Ask the venv's own interpreter: its version picks the stub, its LIBDIR holds its libpython.
    script = (
        "import sys, sysconfig; "
        "print(f'{sys.version_info[0]}.{sys.version_info[1]}'); "
        "print(sysconfig.get_paths()['purelib']); "
        "print(sysconfig.get_config_var('LIBDIR'))"
    )
    out = subprocess.run([str(python), "-c", script], capture_output=True, text=True, check=True).stdout
    version, site_packages, libdir = out.split("\n")[:3]
    venv = TritonVenv(root=root, python_version=version, site_packages=Path(site_packages), libdir=Path(libdir))
    if not (venv.bundled_server / "bin" / "tritonserver").exists():
        raise TritonSetupError(f"nvidia-pytriton is not installed in {root}: run `make setup`")
    return venv


@dataclass(frozen=True)
class TritonHome:
    home: Path
    venv: TritonVenv

    @property
    def server(self) -> Path:
        return self.home / "bin" / "tritonserver"

    @property
    def backends(self) -> Path:
        return self.home / "backends"

    @property
    def shim_dir(self) -> Path:
        return self.home / "lib-shim"

    def env(self) -> dict[str, str]:
        """Environment for tritonserver (and perf_analyzer). Fixed, not inherited: the same stack
        must not look reconfigured because the caller's PATH differs."""
        library_path = [
            self.venv.bundled_libs,
            self.shim_dir,
            self.venv.cuda_runtime_lib,
            # Without it a pyenv interpreter's stub loads Debian's libpython and fails
            # ("'_thread.RLock' object has no attribute '_recursion_count'").
            self.venv.libdir,
        ]
        return {
            # The Python backend stub takes its interpreter and site-packages from `python3` on PATH.
            "PATH": os.pathsep.join([str(self.venv.bin_dir), SYSTEM_PATH]),
            "LD_LIBRARY_PATH": os.pathsep.join(map(str, library_path)),
            "VIRTUAL_ENV": str(self.venv.root),
        }


def ensure_triton_home(home: Path, triton_venv: Path) -> TritonHome:
    """Lay out ``home`` from the venv's pytriton wheel (idempotent: redone only if the wheel changed)."""
    venv = inspect_venv(triton_venv.resolve())
    result = TritonHome(home=home, venv=venv)
    marker = home / ".source"
    source = f"{venv.bundled_server} {(venv.bundled_server / 'bin' / 'tritonserver').stat().st_mtime_ns}"
    if marker.exists() and marker.read_text() == source and result.server.exists():
        return result

    stub = venv.bundled_server / "python_backend_stubs" / venv.python_version / STUB_NAME
    if not stub.exists():
        raise TritonSetupError(f"pytriton ships no Python backend stub for Python {venv.python_version}")
    # Build next to the target and swap in, so a failed copy never leaves half a home and two
    # processes setting up at once do not write into the same directory.
    staging = home.with_name(f"{home.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(venv.bundled_server, staging, ignore=shutil.ignore_patterns("python_backend_stubs"))
    shutil.copy2(stub, staging / "backends" / "python" / STUB_NAME)
    # perf_analyzer wants the unversioned soname; the wheel's copy carries a hash in its name.
    shim = staging / "lib-shim"
    shim.mkdir()
    for lib in venv.bundled_libs.glob("libb64-*.so.0d"):
        (shim / "libb64.so.0d").symlink_to(lib)
        break
    (staging / ".source").write_text(source)
    shutil.rmtree(home, ignore_errors=True)
    try:
        staging.rename(home)
    except OSError:
        # Another process finished first: keep its home.
        shutil.rmtree(staging, ignore_errors=True)
    return result
