"""Encoder registry: plain classes, batch in -> float32 (n, d) matrix out, with a stable id.

The encoders know nothing about Beam; the extract pipeline wraps them.
"""

from features.encoders.base import Encoder, EncoderError, build_encoder, register, registered

__all__ = ["Encoder", "EncoderError", "build_encoder", "register", "registered"]
