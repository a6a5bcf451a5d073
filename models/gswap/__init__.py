"""GSwap (Gaussian head swapping): dynamic neural Gaussian field, tile rasteriser and neural rerenderer."""
