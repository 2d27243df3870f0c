"""Compiled-kernel backends of pyssl.ops: Triton (the default GPU backend)."""
