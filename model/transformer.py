"""The STAR-transformer layer and its encoder/decoder stages (paper section 3.3, eq. 11-14, Fig. 2 e).

One layer, post-LN as the paper writes it (`norm="post"`):
    z_bar   = LN(FAttn(z) + z)                                    (11)
    z', z'' = Decoupling(z_bar)                                   (12)
    z_tilde = LN((STA(z') + z') (+) (STA(z'') + z''))             (13)
    z       = LN(MLP(z_tilde) + z_tilde)                          (14)

Decoupling (zigzag or binary grouping) and the re-coupling (+) live inside `ZigzagAttention` /
`BinaryAttention`, which return every token at its own frame position; since LN and the residual act
per token, eq. (13) is then exactly LN(STA(z_bar) + z_bar).

`norm="pre"` (the default) is the same layer with pre-LN residuals, as in ViT and GPT-2:
    z = z + FAttn(LN(z));  z = z + STA(LN(z));  z = z + MLP(LN(z))
and the model adds one final LayerNorm before pooling. Deviation (docs/design.md, "Making STAR learn"):
with ViT's small init, narrow post-LN models (dim 64) normalise the small differences between clips away
and do not learn at all; with the fan-in init they learn, but with a lower mean and a larger spread over
seeds than pre-LN, which keeps an identity path through every layer.

A stage is L such layers of one kind: "FZ" (F then Z, the paper's encoder), "FB" (F then B, the
decoder) or "FF" (F twice, Table 4's full-attention baseline). The "decoder" has the same structure as
the encoder (Fig. 2 e) and no cross-attention to encoder memory: the paper's equations have none, so
the decoder simply continues on the encoder's output.
"""

from __future__ import annotations

from torch import Tensor, nn

from model.attention import ATTENTION_KINDS, FullAttention

LAYER_KINDS = ("FF", "FZ", "FB")
NORMS = ("pre", "post")


class MLP(nn.Module):
    """Eq. (14)'s MLP: Linear -> GELU -> Linear, as in ViT."""

    def __init__(self, *, dim: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class STARLayer(nn.Module):
    """One STAR-transformer layer, eq. (11)-(14): (B, T, S, D) -> (B, T, S, D)."""

    def __init__(
        self,
        *,
        dim: int,
        heads: int,
        mlp_ratio: float,
        dropout: float,
        kind: str,
        norm: str = "pre",
        attention_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if kind not in LAYER_KINDS:
            raise ValueError(f"unknown STAR layer kind {kind!r}; use one of {', '.join(LAYER_KINDS)} (Table 4).")
        if norm not in NORMS:
            raise ValueError(f"unknown layer norm placement {norm!r}; use one of {', '.join(NORMS)}.")
        self.kind = kind
        self.pre_norm = norm == "pre"
        self.full_attn = FullAttention(dim, heads, dropout, attention_dropout)  # FSTA of eq. (11)
        self.sta = ATTENTION_KINDS[kind[1]](dim, heads, dropout, attention_dropout)  # STA of eq. (13)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.mlp = MLP(dim=dim, hidden=int(dim * mlp_ratio), dropout=dropout)

    def forward(self, z: Tensor) -> Tensor:
        if self.pre_norm:
            z = z + self.full_attn(self.norm1(z))  # eq. (11), pre-LN
            z = z + self.sta(self.norm2(z))  # eq. (12)-(13), pre-LN
            return z + self.mlp(self.norm3(z))  # eq. (14), pre-LN
        z = self.norm1(self.full_attn(z) + z)  # eq. (11)
        z = self.norm2(self.sta(z) + z)  # eq. (12)-(13): decoupling and re-coupling happen inside `sta`
        return self.norm3(self.mlp(z) + z)  # eq. (14)


class STARStage(nn.Module):
    """L STAR layers of one kind: the encoder ("FZ") or the decoder ("FB")."""

    def __init__(
        self,
        *,
        depth: int,
        kind: str,
        dim: int,
        heads: int,
        mlp_ratio: float,
        dropout: float,
        norm: str = "pre",
        attention_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            STARLayer(
                dim=dim,
                heads=heads,
                mlp_ratio=mlp_ratio,
                dropout=dropout,
                kind=kind,
                norm=norm,
                attention_dropout=attention_dropout,
            )
            for _ in range(depth)
        )

    def forward(self, z: Tensor) -> Tensor:
        for layer in self.layers:
            z = layer(z)  # (B, T, S, D)
        return z
