"""SwapForge command-line tools: workflow checking and conversion, UI twins, batch queueing.

Nothing here imports ComfyUI or torch: the tools run in any Python with the standard library
(and websocket-client for live progress in batch_queue).
"""
