"""Finding the objects a question is about: a grounding head, and an object classifier.

Measured on the synthetic rooms (issue 12): a causal LM, tiny or pretrained, cannot tell which of
~20 object tokens a question is about. The object sequence carries no order signal (RoPE is
relative, the spatial transformer is permutation-equivariant), so LEO's "relevant objects first"
is invisible to it, and matching a question's words to point-cloud tokens was not found within a
laptop's training budget. ScanQA's own baseline solves the same problem with an object-localisation
objective; the `GroundingHead` does that: a small text encoder reads the question, a decoder lets
every object attend to the other objects (relations: "the cup on the desk") and to the question,
and a linear score says whether the object is one the question is about. It is trained on the
annotations' `object_ids` (binary cross-entropy) in its own stage, before the LM stages, so at
inference the model needs no annotation to put the right objects first.

The `ObjectClassifier` is the point encoder's pretraining head (LEO freezes a PointNet++ pretrained
on ScanNet object classification): category, and colour where the captions name one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cl3dor_ray.config import GroundingConfig

IGNORE = -100  # a target the data does not carry (an object no caption gives a colour)


def _layers(kind, width: int, heads: int, n: int):
    layer = kind(width, heads, 2 * width, dropout=0.0, batch_first=True, norm_first=True)
    wrap = nn.TransformerEncoder if kind is nn.TransformerEncoderLayer else nn.TransformerDecoder
    kwargs = {"enable_nested_tensor": False} if wrap is nn.TransformerEncoder else {}
    return wrap(layer, n, **kwargs)


class GroundingHead(nn.Module):
    """(point features, boxes, question tokens) -> one relevance logit per object."""

    def __init__(self, cfg: GroundingConfig, vocab_size: int, feature_dim: int):
        super().__init__()
        w = cfg.width
        self.max_tokens = cfg.max_question_tokens
        self.embed = nn.Embedding(vocab_size, w)
        self.positions = nn.Parameter(torch.randn(cfg.max_question_tokens, w) * 0.02)
        # LayerNorm first: without it the question's signal is too weak to learn from (measured)
        self.text = nn.Sequential(nn.LayerNorm(w), _layers(nn.TransformerEncoderLayer, w, cfg.heads, cfg.text_layers))
        self.objects_in = nn.Linear(feature_dim, w)
        self.location = nn.Sequential(nn.Linear(6, w), nn.GELU(), nn.Linear(w, w))
        self.decoder = _layers(nn.TransformerDecoderLayer, w, cfg.heads, cfg.layers)
        self.score = nn.Sequential(nn.LayerNorm(w), nn.Linear(w, 1))

    def forward(self, features: torch.Tensor, boxes: torch.Tensor, object_mask: torch.Tensor,
                question_ids: torch.Tensor, question_mask: torch.Tensor) -> torch.Tensor:
        """features (B, N, D), boxes (B, N, 6) centre + size, object_mask (B, N) bool,
        question_ids / question_mask (B, L) -> logits (B, N), -1e4 where there is no object."""
        ids, qmask = question_ids[:, : self.max_tokens], question_mask[:, : self.max_tokens].bool()
        text = self.text(self.embed(ids) + self.positions[: ids.shape[1]])
        dtype = self.objects_in.weight.dtype
        x = self.objects_in(features.to(dtype)) + self.location(boxes.to(dtype))
        x = self.decoder(x, text.to(dtype), tgt_key_padding_mask=~object_mask, memory_key_padding_mask=~qmask)
        return self.score(x).squeeze(-1).float().masked_fill(~object_mask, -1e4)


def grounding_loss(logits: torch.Tensor, relevant: torch.Tensor, object_mask: torch.Tensor,
                   pos_weight: float = 2.0) -> torch.Tensor:
    """Binary cross-entropy over real objects; relevant objects are few, so they weigh `pos_weight`."""
    return F.binary_cross_entropy_with_logits(logits[object_mask], relevant[object_mask].float(),
                                              pos_weight=torch.tensor(pos_weight, device=logits.device))


class ObjectClassifier(nn.Module):
    """Point-encoder feature -> category logits and colour logits."""

    def __init__(self, feature_dim: int, num_labels: int, num_colors: int):
        super().__init__()
        self.label = nn.Linear(feature_dim, num_labels)
        self.color = nn.Linear(feature_dim, max(num_colors, 1))

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.label(features), self.color(features)


def classification_loss(classifier: ObjectClassifier, features: torch.Tensor, labels: torch.Tensor,
                        colors: torch.Tensor) -> torch.Tensor:
    label_logits, color_logits = classifier(features)
    loss = F.cross_entropy(label_logits.float(), labels)
    if (colors != IGNORE).any():
        loss = loss + F.cross_entropy(color_logits.float(), colors, ignore_index=IGNORE)
    return loss
