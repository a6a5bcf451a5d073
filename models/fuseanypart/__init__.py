"""FuseAnyPart family (Yu et al., "FuseAnyPart: Diffusion-Driven Facial Parts Swapping via Multiple
Reference Images", NeurIPS 2024).

One file per idea:
- clip_inputs.py: the images handed to the CLIP image encoder and the inpainting mask (paper sec. 3.2/3.3):
  skin-filled target, part reference images, the unconditional input, CLIP preprocessing.
- fusion.py: the Mask-based Fusion Module on the 16 x 16 CLIP patch grids (paper eq. 3) and the
  FapCondition record (SWAPFORGE_FAP_COND) that the injection stage consumes.

Part boxes everywhere in this family are [y0, x0, y1, x1] normalised to the frame (models/partswap/parts.py).
Nothing in this package imports ComfyUI.
"""
