/*
 * SwapForge tvshim: stand-in for libc10_cuda.so on a CPU-only torch.
 *
 * The PyPI torchvision 0.28.0 wheel is a CUDA build. Its torchvision/_C.so and
 * torchvision/image.so list libc10_cuda.so and libtorch_cuda.so as NEEDED and
 * import the symbols below from them. A CPU torch ships neither library, so the
 * import fails and torchvision::nms is never registered. This library defines
 * exactly those symbols (their list comes from
 * `nm -D --undefined-only torchvision/_C.so torchvision/image.so` checked
 * against torch/lib; build.sh repeats that check) so the loader is satisfied.
 *
 * None of them can do CUDA work: every function prints what was called and
 * aborts, except device_count() (0 devices) and the error check for a success
 * code. CPU kernels never call them.
 *
 * Symbols are written with their Itanium C++ mangled names so that plain C
 * (no libstdc++) builds them; argument types do not matter for functions that
 * never return, and the values that are returned use the C++ ABI's registers.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define TVSHIM_VISIBLE __attribute__((visibility("default")))

static void tvshim_fail(const char *what) __attribute__((noreturn));
static void tvshim_fail(const char *what)
{
    fprintf(stderr,
            "SwapForge tvshim: %s was called, but this torch is a CPU build.\n"
            "SwapForge tvshim: the CUDA stubs only let the CUDA torchvision wheel load; "
            "run torchvision ops on CPU tensors or install a CUDA torch. Aborting.\n",
            what);
    fflush(stderr);
    abort();
}

/* c10::cuda::CUDACachingAllocator::allocator: std::atomic<CUDAAllocator*>, null. */
TVSHIM_VISIBLE void *_ZN3c104cuda20CUDACachingAllocator9allocatorE = 0;

/* c10::cuda::device_count() -> DeviceIndex (int8_t): no CUDA devices. */
TVSHIM_VISIBLE int8_t _ZN3c104cuda12device_countEv(void) { return 0; }

/* c10::cuda::c10_cuda_check_implementation(int err, const char*, const char*, unsigned, bool) */
TVSHIM_VISIBLE void _ZN3c104cuda29c10_cuda_check_implementationEiPKcS2_jb(
    int err, const char *file, const char *func, unsigned line, int include_device_assertions)
{
    (void)include_device_assertions;
    if (err == 0) /* cudaSuccess */
        return;
    fprintf(stderr, "SwapForge tvshim: CUDA error %d reported at %s:%u (%s).\n",
            err, file ? file : "?", line, func ? func : "?");
    tvshim_fail("c10::cuda::c10_cuda_check_implementation()");
}

#define TVSHIM_ABORTS(mangled, pretty) \
    TVSHIM_VISIBLE void mangled(void) { tvshim_fail(pretty); }

TVSHIM_ABORTS(_ZN3c104cuda14current_deviceEv, "c10::cuda::current_device()")
TVSHIM_ABORTS(_ZN3c104cuda9GetDeviceEPa, "c10::cuda::GetDevice(int8_t*)")
TVSHIM_ABORTS(_ZN3c104cuda9SetDeviceEab, "c10::cuda::SetDevice(int8_t, bool)")
TVSHIM_ABORTS(_ZN3c104cuda14ExchangeDeviceEa, "c10::cuda::ExchangeDevice(int8_t)")
TVSHIM_ABORTS(_ZN3c104cuda14MaybeSetDeviceEa, "c10::cuda::MaybeSetDevice(int8_t)")
TVSHIM_ABORTS(_ZN3c104cuda17getStreamFromPoolEba, "c10::cuda::getStreamFromPool(bool, int8_t)")
TVSHIM_ABORTS(_ZN3c104cuda17getStreamFromPoolEia, "c10::cuda::getStreamFromPool(int, int8_t)")
TVSHIM_ABORTS(_ZN3c104cuda20getCurrentCUDAStreamEa, "c10::cuda::getCurrentCUDAStream(int8_t)")
TVSHIM_ABORTS(_ZN3c104cuda20getDefaultCUDAStreamEa, "c10::cuda::getDefaultCUDAStream(int8_t)")
TVSHIM_ABORTS(_ZN3c104cuda20setCurrentCUDAStreamENS0_10CUDAStreamE,
              "c10::cuda::setCurrentCUDAStream(CUDAStream)")
TVSHIM_ABORTS(_ZNK3c104cuda10CUDAStream11synchronizeEv, "c10::cuda::CUDAStream::synchronize()")
TVSHIM_ABORTS(_ZNK3c104cuda10CUDAStream5queryEv, "c10::cuda::CUDAStream::query()")
TVSHIM_ABORTS(_ZNK3c104cuda10CUDAStream6streamEv, "c10::cuda::CUDAStream::stream()")
