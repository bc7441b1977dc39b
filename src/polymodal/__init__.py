"""polymodal: multimodal deep learning on text, images and audio."""

__version__ = "0.1.0"
