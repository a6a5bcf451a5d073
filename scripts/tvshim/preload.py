"""SwapForge tvshim loader, imported at interpreter start by swapforge_tvshim.pth.

The PyPI torchvision wheel is a CUDA build; on a CPU torch its extension needs
libc10_cuda.so, libtorch_cuda.so and libcudart.so.13. When torch's own lib/ has
no real libc10_cuda.so, this loads the stub libraries built from
scripts/tvshim/*.c (and the libcudart copy bundled with torchvision) with
RTLD_GLOBAL, so the dynamic loader resolves torchvision's NEEDED entries by
SONAME. It imports neither torch nor torchvision. Set SWAPFORGE_TVSHIM=0 to
turn it off.
"""

import os
import sys


def _preload():
    if os.environ.get("SWAPFORGE_TVSHIM", "1") == "0":
        return
    import importlib.util

    torch_spec = importlib.util.find_spec("torch")
    if torch_spec is None or not torch_spec.submodule_search_locations:
        return
    torch_dir = list(torch_spec.submodule_search_locations)[0]
    if os.path.exists(os.path.join(torch_dir, "lib", "libc10_cuda.so")):
        return  # a CUDA torch: the real libraries are there
    shim_dir = os.path.join(sys.prefix, "lib", "swapforge_tvshim")
    if not os.path.isdir(shim_dir):
        return
    import ctypes
    import glob

    # libcudart.so.13: the copy bundled with torchvision keeps that SONAME; loading
    # it first makes the result the same on machines with and without a system CUDA.
    tv_libs = os.path.join(os.path.dirname(torch_dir), "torchvision.libs")
    for path in sorted(glob.glob(os.path.join(tv_libs, "libcudart*.so.13*"))):
        ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
        break
    for name in ("libc10_cuda.so", "libtorch_cuda.so"):
        ctypes.CDLL(os.path.join(shim_dir, name), mode=ctypes.RTLD_GLOBAL)


try:
    _preload()
except OSError as exc:  # never stop the interpreter; say why torchvision may fail later
    sys.stderr.write(f"SwapForge tvshim: could not preload the CUDA stubs ({exc}); "
                     "torchvision's C++ ops will not load. Rerun scripts/setup_venv.sh.\n")
