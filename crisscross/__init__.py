"""CrissCross: audio-visual self-supervised learning with intra-modal, synchronous and
asynchronous cross-modal SimSiam-style losses."""

__version__ = "0.1.0"
