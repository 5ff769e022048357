"""vit_lib: SimpleViT with flash attention, written to be read. The library behind the book.

The model modules are built in chapters 1-5 (book/01_patchify.ipynb to book/05_simplevit.ipynb);
book/library.md lists every module and the chapter it comes from.
"""

from vit_lib.attention import Attend, attention_math, sdpa_backends, set_attention_backend
from vit_lib.model import SimpleViT
from vit_lib.patches import PatchEmbedding, pair
from vit_lib.position_embeddings import posemb_sincos_2d, sincos_2d
from vit_lib.transformer import Attention, FeedForward, Transformer

__version__ = "0.1.0"  # the one place the version is written: pyproject.toml reads it

__all__ = [
    "Attend",
    "Attention",
    "FeedForward",
    "PatchEmbedding",
    "SimpleViT",
    "Transformer",
    "attention_math",
    "pair",
    "posemb_sincos_2d",
    "sdpa_backends",
    "set_attention_backend",
    "sincos_2d",
]
