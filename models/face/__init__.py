"""Shared face tools: detection, landmarks, tracking, alignment, paste back, identity."""
