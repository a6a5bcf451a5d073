"""Face swapping with style blending (arXiv 2312.10843): StyleGAN2 decoder, encoder and style blending."""
