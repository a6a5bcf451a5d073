/*
 * SwapForge tvshim: stand-in for libtorch_cuda.so on a CPU-only torch.
 * See c10_cuda_stub.c for why. Defines the at::cuda symbol the CUDA torchvision
 * wheel imports and the stable-ABI (extern "C") CUDA functions the CUDA
 * torchaudio 2.11 wheel imports (ComfyUI's audio nodes load torchaudio).
 * Everything aborts if called, except the error check for a success code.
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
            "SwapForge tvshim: the CUDA stubs only let the CUDA torchvision/torchaudio wheels "
            "load; use CPU tensors or install a CUDA torch. Aborting.\n",
            what);
    fflush(stderr);
    abort();
}

#define TVSHIM_ABORTS(name, pretty) \
    TVSHIM_VISIBLE void name(void) { tvshim_fail(pretty); }

/* at::cuda::getCurrentDeviceProperties() (torchvision) */
TVSHIM_ABORTS(_ZN2at4cuda26getCurrentDevicePropertiesEv, "at::cuda::getCurrentDeviceProperties()")

/* torch stable C ABI, CUDA part (torchaudio) */
TVSHIM_ABORTS(aoti_torch_get_current_cuda_stream, "aoti_torch_get_current_cuda_stream()")
TVSHIM_ABORTS(torch_get_cuda_stream_from_pool, "torch_get_cuda_stream_from_pool()")
TVSHIM_ABORTS(torch_set_current_cuda_stream, "torch_set_current_cuda_stream()")
TVSHIM_ABORTS(torch_cuda_stream_synchronize, "torch_cuda_stream_synchronize()")

/* AOTITorchError torch_c10_cuda_check_msg(int32_t err, const char *file, const char *func,
 *                                          uint32_t line, bool device_asserts, char **msg) */
TVSHIM_VISIBLE int32_t torch_c10_cuda_check_msg(int32_t err, const char *file, const char *func,
                                                uint32_t line, int device_asserts, char **msg)
{
    (void)device_asserts;
    if (err == 0) { /* cudaSuccess: no message */
        if (msg)
            *msg = NULL;
        return 0;
    }
    fprintf(stderr, "SwapForge tvshim: CUDA error %d reported at %s:%u (%s).\n",
            (int)err, file ? file : "?", (unsigned)line, func ? func : "?");
    tvshim_fail("torch_c10_cuda_check_msg()");
}

/* void torch_c10_cuda_free_error_msg(char *msg): torch_c10_cuda_check_msg never allocates. */
TVSHIM_VISIBLE void torch_c10_cuda_free_error_msg(char *msg) { free(msg); }
