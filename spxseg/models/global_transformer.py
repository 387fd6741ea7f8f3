"""Global reasoning over superpixel tokens: a pre-norm transformer encoder using SDPA.

See ARCHITECTURE.md, Global transformer and classification.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import Tensor, nn

from spxseg.models.layers import FeedForward, layer_scale_vector, scaled


class SelfAttention(nn.Module):
    """Multi-head self-attention through SDPA. With ``qk_norm`` each head's queries and keys go through their own
    LayerNorm before the dot product (Dehghani et al., "Scaling vision transformers to 22 billion parameters",
    2023), which bounds the attention logits."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0, qk_norm: bool = False) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"model.transformer.heads={heads} must divide model.transformer.dim={dim}")
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = nn.LayerNorm(dim // heads) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(dim // heads) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        """(B, N, D) -> (B, N, D)."""
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k = self.q_norm(q), self.k_norm(k)
        drop = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)  # (B, heads, N, d / heads)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class EncoderLayer(nn.Module):
    """Pre-norm attention and MLP, each a residual branch: (B, N, D) -> (B, N, D).

    With ``layer_scale`` > 0 each branch's output is multiplied channel-wise by a learned vector that starts at
    that value (LayerScale, Touvron et al., "Going deeper with image transformers", 2021), so a deep stack starts
    close to the identity; 0 = plain residuals (no extra parameters). With ``drop_path`` > 0, in training, each
    branch is dropped for a whole sample with that probability and kept ones are scaled by 1 / (1 - p)
    (stochastic depth, Huang et al., 2016; timm's ``DropPath``); nothing changes at inference.
    """

    def __init__(
        self, dim: int, heads: int, mlp_ratio: float, dropout: float, layer_scale: float = 0.0,
        drop_path: float = 0.0, qk_norm: bool = False,
    ) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, dropout, qk_norm)
        self.mlp_norm = nn.LayerNorm(dim)
        self.mlp = FeedForward(dim, mlp_ratio, dropout)
        self.attn_scale = layer_scale_vector(dim, layer_scale)
        self.mlp_scale = layer_scale_vector(dim, layer_scale)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(scaled(self.attn(self.attn_norm(x)), self.attn_scale))
        return x + self.drop_path(scaled(self.mlp(self.mlp_norm(x)), self.mlp_scale))


class GlobalTransformer(nn.Module):
    """Projects superpixels to width D, adds a centroid position encoding, runs L encoder layers.

    Args:
        in_channels: C, width of the tokenizer's superpixels.
        dim: D, token width.
        drop_path: stochastic depth of the last layer; layer i of L drops its branches with probability
            ``drop_path * i / (L - 1)`` (timm's linear rule: the first layer never, a single layer never).
    """

    def __init__(
        self, in_channels: int, dim: int = 256, layers: int = 4, heads: int = 8, mlp_ratio: float = 4.0,
        dropout: float = 0.0, layer_scale: float = 0.0, drop_path: float = 0.0, qk_norm: bool = False,
    ) -> None:
        super().__init__()
        self.input = nn.Linear(in_channels, dim)
        self.position = nn.Sequential(nn.Linear(2, dim), nn.GELU(), nn.Linear(dim, dim))
        rates = torch.linspace(0, drop_path, layers).tolist()
        self.layers = nn.ModuleList(
            EncoderLayer(dim, heads, mlp_ratio, dropout, layer_scale, rate, qk_norm) for rate in rates
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: Tensor, centroids: Tensor, every_layer: bool = False) -> Tensor:
        """tokens (B, N, C), centroids (B, N, 2) in [0, 1] -> (B, N, D), normalised.

        With ``every_layer``, (L, B, N, D): each layer's output through the final norm, the last being the usual
        output (what deep supervision classifies; L >= 1).
        """
        x = self.input(tokens) + self.position(centroids.to(tokens.dtype))
        outputs = []
        for layer in self.layers:
            x = layer(x)
            if every_layer:
                outputs.append(x)
        if every_layer:
            if not outputs:
                raise ValueError("every_layer needs model.transformer.layers >= 1")
            return self.norm(torch.stack(outputs))
        return self.norm(x)
