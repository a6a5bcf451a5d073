"""SwapForge models: plain PyTorch/NumPy, no ComfyUI import anywhere below this package."""
