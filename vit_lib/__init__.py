"""vit_lib: SimpleViT with flash attention, written to be read. The library behind the book."""

from vit_lib.attention import Attend, attention_math, sdpa_backends, set_attention_backend
from vit_lib.model import SimpleViT
from vit_lib.patches import PatchEmbedding, pair
from vit_lib.position_embeddings import posemb_sincos_2d, sincos_2d
from vit_lib.transformer import Attention, FeedForward, Transformer

__version__ = "0.1.0"

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
