"""Finding the objects a question is about: a grounding head, and an object classifier.

Measured on the synthetic rooms (issue 12): a causal LM, tiny or pretrained, cannot tell which of
~20 object tokens a question is about. The object sequence carries no order signal (RoPE is
relative, the spatial transformer is permutation-equivariant), so LEO's "relevant objects first"
is invisible to it, and matching a question's words to point-cloud tokens was not found within a
laptop's training budget. ScanQA's own baseline solves the same problem with an object-localisation
objective; the `GroundingHead` does that: a small text encoder reads the question, decoder layers let
every object attend to the other objects and to the question, and a linear score says whether the
object is one the question is about. The object-to-object attention is biased by the pair's geometry
(offset, distance, vertical gap, overlap), as LEO's spatial transformer biases its attention with
pairwise locations: on the synthetic rooms that took the exact-set accuracy of relation questions
("Where is the cup placed?") from 0.49 to 0.81 and of colour questions from 0.71 to 0.87. It is trained on the
annotations' `object_ids` (binary cross-entropy) in its own stage, before the LM stages, so at
inference the model needs no annotation to put the right objects first. A second score says which of
them is the question's subject (the object asked about, the first of its `object_ids`), so a relation
between two objects reaches the LM in the question's order.

A question can name one object to ask about another: "what is on the nightstand?" is about the object
the nightstand holds (two hops: the words find the nightstand, the geometry finds what is on it). The
decoder's attention did not learn that hop (the subject came first in 4 of 17 validation questions,
issue 22), so the head makes it explicit: a third score says which object is the anchor (an object
the annotation names beside the subject), and every object adds its pair geometry to the anchor,
weighted by that score, before its relevance and subject are scored. A sum cannot pick the nearest of
several candidates ("what is next to the table?"), so each object also gets its share of a softmin over
the candidates' distances to the anchor (`model.grounding.nearest`). Fed to the scores as a feature, that
share was right on validation questions the relevance score still missed, so a second softmin, taught
outright which candidate a two-hop question asks for, adds its pick to the relevant objects
(`model.grounding.answer_hop`; the answer first on 0.569 of the validation category questions against
0.412 for the same heads without it, over three seeds).

A question that names its subject has it relevant, yet the relevance score is a yes or no per object read
from the room's features, and one head fitted its training rooms and still missed the named subject of
new ones. ScanRefer's remedy: predict the subject's category from the words alone and match it to each
object's predicted category. The subject match reads the question for its subject's category and colour
and scores each object by how well the object classifier's beliefs agree (`model.grounding.subject_match`);
its sure picks are relevant.

The `ObjectClassifier` is the point encoder's pretraining head (LEO freezes a PointNet++ pretrained
on ScanNet object classification): category, and colour where the captions name one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cl3dor_ray.config import GroundingConfig

IGNORE = -100  # a target the data does not carry (an object no caption gives a colour)


GEOMETRY = 9  # pairwise features per object pair (pair_geometry)


def pair_geometry(boxes: torch.Tensor) -> torch.Tensor:
    """(B, N, 6) centre + size -> (B, N, N, 9) for each (i, j): the offset of j from i (3), its
    horizontal distance, the vertical gap between i's top... j's bottom, j's size (3), and whether their
    footprints overlap (j rests on i, or i on j)."""
    c, size = boxes[..., :3], boxes[..., 3:]
    rel = c[:, None, :, :] - c[:, :, None, :]
    half = (size[:, :, None, :] + size[:, None, :, :]) / 2
    gap = rel[..., 2:3].abs() - half[..., 2:3]
    overlap = (rel[..., :2].abs() < half[..., :2]).all(-1, keepdim=True)
    return torch.cat(
        [rel, rel[..., :2].norm(dim=-1, keepdim=True), gap, size[:, None].expand_as(rel), overlap.to(rel.dtype)], dim=-1
    )


class GeometricDecoderLayer(nn.Module):
    """Pre-norm: objects attend to objects (with a per-head bias from the pair's geometry), then to the
    question's tokens, then a feed-forward block."""

    def __init__(self, width: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.heads = heads
        self.norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(3))
        self.self_attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.geometry = nn.Sequential(nn.Linear(GEOMETRY, 32), nn.GELU(), nn.Linear(32, heads))
        self.ff = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, text, geometry, object_mask, text_mask):
        bias = self.geometry(geometry).permute(0, 3, 1, 2)  # (B, heads, N, N)
        bias = bias.masked_fill(~object_mask[:, None, None, :], float("-inf")).flatten(0, 1)
        h = self.norms[0](x)
        x = x + self.self_attn(h, h, h, attn_mask=bias.to(h.dtype), need_weights=False)[0]
        h = self.norms[1](x)
        x = x + self.cross_attn(h, text, text, key_padding_mask=~text_mask, need_weights=False)[0]
        return x + self.dropout(self.ff(self.norms[2](x)))


class GroundingHead(nn.Module):
    """(point features, boxes, question tokens) -> one relevance logit per object."""

    def __init__(self, cfg: GroundingConfig, vocab_size: int, feature_dim: int, beliefs: tuple[int, int] = (0, 0)):
        """`beliefs`: the object classifier's (categories, colours), whose probabilities end each object's
        features; (0, 0) where there is no classifier."""
        super().__init__()
        w = cfg.width
        self.max_tokens = cfg.max_question_tokens
        self.embed = nn.Embedding(vocab_size, w)
        self.positions = nn.Parameter(torch.randn(cfg.max_question_tokens, w) * 0.02)
        # LayerNorm first: without it the question's signal is too weak to learn from (measured)
        text_layer = nn.TransformerEncoderLayer(
            w, cfg.heads, 2 * w, dropout=cfg.dropout, batch_first=True, norm_first=True
        )
        self.text = nn.Sequential(
            nn.LayerNorm(w), nn.TransformerEncoder(text_layer, cfg.text_layers, enable_nested_tensor=False)
        )
        self.objects_in = nn.Linear(feature_dim, w)
        self.feature_dropout = nn.Dropout(cfg.dropout)
        self.location = nn.Sequential(nn.Linear(6, w), nn.GELU(), nn.Linear(w, w))
        self.decoder = nn.ModuleList(GeometricDecoderLayer(w, cfg.heads, cfg.dropout) for _ in range(cfg.layers))
        # the hop: which object is the question's anchor (the one it names to place its subject: "the
        # nightstand" in "what is on the nightstand?"), then every object reads its relation to the anchor
        self.anchor = nn.Sequential(nn.LayerNorm(w), nn.Linear(w, 1))
        # a pair's relation, summed over the anchor score before it is widened (the sum is over N x N pairs)
        self.relate = nn.Sequential(nn.Linear(GEOMETRY, 32), nn.GELU())
        self.hop = nn.Linear(32, w)
        # the hop starts at nothing: summed over ~20 objects at anchor scores of 0.5, it was noise that took
        # the subject-first rate of relation questions from 0.65 to 0.35 (issue 22)
        nn.init.constant_(self.anchor[1].bias, -4.0)
        nn.init.zeros_(self.hop.weight)
        nn.init.zeros_(self.hop.bias)
        # the nearest to the anchor: "what is next to the table?" asks for the one candidate closest to it,
        # a comparison across objects that a per-object sum over the anchor cannot make (category questions,
        # subject first on 5 of 17 validation questions, issue 22). Which objects are candidates is learned from
        # the question and the object; a softmin of their distances to the anchor says which is nearest.
        self.nearest = cfg.nearest
        if self.nearest:
            # drawn from a forked generator: every other weight of the model gets the same initial values with
            # and without this score, so a seed compares the two on nothing else
            with torch.random.fork_rng(devices=[]):
                self.candidate = nn.Sequential(nn.LayerNorm(w), nn.Linear(w, 1))
                self.near = nn.Linear(2, w)
            nn.init.zeros_(self.near.weight)  # starts at nothing, as the hop does
            nn.init.zeros_(self.near.bias)
            # shape (1,): DeepSpeed cannot broadcast a 0-d parameter
            self.log_temperature = nn.Parameter(torch.tensor([-1.0]))  # metres, exp(-1) = 0.37 m
            self.nearest_none = cfg.nearest_none
        # the answer hop: "what is on the nightstand?" asks for the candidate nearest the anchor, and the head
        # says so outright. The nearest share above feeds the relevance score through a learned projection;
        # trained on the category questions, that score learned the training rooms' answers instead and
        # missed the validation ones the share got right (the answer's relevance below 0 while its share
        # was the softmin's largest, issue 22). This softmin has its own candidate score and temperature,
        # is taught outright (the subject, on questions that name the anchor and not the subject: the
        # batch's `hop`; "no hop" on all others, decided from the question alone), and reads the decoder's
        # features without moving them. Where the head decides (eval mode: the focus, its figures, serving),
        # its pick is relevant whatever the relevance score says. That score still learns from the
        # annotations alone: trained through the union too, the answer came first less often (0.568 over three
        # seeds, against 0.647) and seed 0's head lost location questions (subject first 0.229; results.md)
        self.answer_hop = cfg.answer_hop
        if self.answer_hop:
            with torch.random.fork_rng(devices=[]):  # as for `candidate`: the other weights stay the same
                self.hop_candidate = nn.Sequential(nn.LayerNorm(w), nn.Linear(w, w), nn.GELU(), nn.Linear(w, 1))
                self.hop_none = nn.Sequential(nn.LayerNorm(w), nn.Linear(w, 1))
            self.hop_log_temperature = nn.Parameter(torch.tensor([-1.0]))
        # the subject match: a question that names its subject ("where is the brown sofa placed?") has it
        # relevant. The relevance score is a per-object yes or no read from the room's features, and one head
        # (seed 0) said no to the named subject on 13 of 35 validation location questions while it fitted the
        # training ones (issue 22). ScanRefer's answer to the same problem: predict the target's category from
        # the words alone and match it to each object's predicted category, which does not depend on the room.
        # A learned query reads the question for its subject's category and colour; each object's logit is
        # the log-probability that its classifier beliefs agree with both, against a "none" read from the
        # question (the subject absent: "is there a lamp?" where there is none). Taught outright which object
        # the question names; where the head decides, its pick is relevant, as the answer hop's is
        self.subject_match = cfg.subject_match and beliefs[0] > 0
        # only a sure pick joins: taken at 0.5 (one seed, validation rooms), it added a wrong object to 23 of the
        # 117 POPE questions where it did not pick the subject (most name an object the room lacks), and POPE F1
        # fell by 0.07-0.09; 3 of those picks were at 0.8 or more, which kept 29 of the 34 location subjects
        # and 42 of the 56 relation subjects it found
        self.match_sure = cfg.match_sure
        if self.subject_match:
            self.beliefs = beliefs
            with torch.random.fork_rng(devices=[]):  # as for `candidate`: the other weights stay the same
                torch.manual_seed(torch.initial_seed() + 1)  # not the answer hop's draws
                self.subject_query = nn.Parameter(torch.randn(1, 1, w) * 0.02)
                self.subject_read = nn.MultiheadAttention(w, cfg.heads, batch_first=True)
                self.subject_class = nn.Sequential(nn.LayerNorm(w), nn.Linear(w, sum(beliefs)))
                self.match_none = nn.Sequential(nn.LayerNorm(w), nn.Linear(w, 1))
        # per object: is it one the question is about, and is it the question's subject (the object asked
        # about, before the ones it is placed against: "the cup" in "is the cup above or below the lamp?")
        self.score = nn.Sequential(nn.LayerNorm(w), nn.Linear(w, 2))

    def forward(
        self,
        features: torch.Tensor,
        boxes: torch.Tensor,
        object_mask: torch.Tensor,
        question_ids: torch.Tensor,
        question_mask: torch.Tensor,
    ) -> torch.Tensor:
        """features (B, N, D), boxes (B, N, 6) centre + size, object_mask (B, N) bool,
        question_ids / question_mask (B, L) -> logits (B, N, 5): relevance, subject, anchor, the answer hop's
        logit against "no hop" and the subject match's against "none" (0 without them), -1e4 where there is no
        object."""
        ids, qmask = question_ids[:, : self.max_tokens], question_mask[:, : self.max_tokens].bool()
        # the question's padding is masked: a right-padded question read its batch's padding, so the head's
        # scores moved with the other questions of its batch (up to 8.5 in logit, 13 of 96 focus counts)
        norm, encoder = self.text
        text = encoder(norm(self.embed(ids) + self.positions[: ids.shape[1]]), src_key_padding_mask=~qmask)
        dtype = self.objects_in.weight.dtype
        boxes = boxes.to(dtype)
        x = self.objects_in(self.feature_dropout(features.to(dtype))) + self.location(boxes)
        geometry = pair_geometry(boxes)
        for layer in self.decoder:
            x = layer(x, text.to(dtype), geometry, object_mask, qmask)
        anchor = self.anchor(x).masked_fill(~object_mask.unsqueeze(-1), -1e4)
        # object i's relation to each j, weighted by how surely j is the anchor
        weight = torch.sigmoid(anchor[..., 0])
        hop = self.hop(torch.einsum("bj,bijr->bir", weight, self.relate(geometry)))
        to_anchor = _distance_to_anchor(weight, geometry[..., 3])
        if self.nearest:
            hop = hop + self.near(self._nearest(x, to_anchor, object_mask))
        score = self.score(x + hop).float()
        relevance, none = score[..., 0], torch.zeros_like(score[..., 0])
        x, text = x.detach(), text.detach()  # the picks read the head's features without moving them
        answer = self._answer_hop(x, to_anchor.detach(), text, qmask, object_mask) if self.answer_hop else none
        subject = self._subject_match(features, text, qmask, object_mask) if self.subject_match else none
        if not self.training:  # where the head decides; its relevance score learns from the annotations alone
            for on, pick, sure in ((self.answer_hop, answer, 0.0), (self.subject_match, subject, self.match_sure)):
                if on:
                    share = torch.softmax(with_none(pick), -1)[:, :-1]
                    relevance = _either(relevance, share * (share >= sure))
        logits = torch.stack([relevance, score[..., 1], anchor[..., 0].float(), answer, subject], dim=-1)
        return logits.masked_fill(~object_mask.unsqueeze(-1), -1e4)

    def _answer_hop(self, x, to_anchor, text, qmask, object_mask):
        """(B, N) each object's logit of being the answer the question hops to from its anchor (the candidate
        nearest it), against "no hop" at 0; the question alone says whether it hops."""
        logits = self.hop_candidate(x)[..., 0] - to_anchor / self.hop_log_temperature.exp()
        return _against_none(logits, self.hop_none, text, qmask, object_mask)

    def _subject_match(self, features, text, qmask, object_mask):
        """(B, N) each object's log-probability that its category and colour are those the question names for
        its subject, against "none" at 0."""
        query = self.subject_query.expand(text.shape[0], -1, -1).to(text.dtype)
        read = self.subject_read(query, text, text, key_padding_mask=~qmask, need_weights=False)[0][:, 0]
        named = self.subject_class(read).float()
        labels, colors = self.beliefs
        objects = features.float()[..., -(labels + colors) :]  # the classifier's probabilities
        agree = [
            torch.einsum("bc,bnc->bn", named[:, a:b].softmax(-1), objects[..., a:b]).clamp_min(1e-6).log()
            for a, b in ((0, labels), (labels, labels + colors))
        ]
        logits = agree[0] + agree[1] - self.match_none(read).float()
        return logits.masked_fill(~object_mask, -1e4)

    def _nearest(self, x, to_anchor, object_mask):
        """(B, N, 2): each object's share of a softmin over the candidates' horizontal distances to the
        anchor (`_distance_to_anchor`), and that distance.

        The softmin has a "none" option at logit 0 (`model.grounding.nearest_none`): without it one object won
        every question, those that name no anchor too ("is there a lamp in the room?"), where the distances are
        to a weighted mean of the whole room. With it, a candidate must be within about a temperature (0.37 m
        at the start) of the anchor, or as sure a candidate, to take a share."""
        logits = self.candidate(x)[..., 0] - to_anchor / self.log_temperature.exp()
        logits = logits.masked_fill(~object_mask, -1e4)
        if self.nearest_none:
            logits = with_none(logits)
        share = torch.softmax(logits, dim=-1)[:, : x.shape[1]]
        return torch.stack([share, to_anchor], dim=-1)


def _against_none(logits, none, text, qmask, object_mask):
    """(B, N) candidate logits -> the same against a "none" option at 0, whose logit `none` reads from the
    question alone (its mean-pooled token features)."""
    pooled = (text * qmask.unsqueeze(-1)).sum(1) / qmask.sum(1, keepdim=True).clamp_min(1)
    return (logits - none(pooled)).float().masked_fill(~object_mask, -1e4)


def _distance_to_anchor(weight: torch.Tensor, distance: torch.Tensor) -> torch.Tensor:
    """(B, N) anchor scores in (0, 1) and (B, N, N) horizontal distances -> (B, N) each object's distance to
    the other objects, weighted by their anchor scores, so the anchor itself is not its own nearest."""
    others = weight[:, None, :] * (1 - torch.eye(weight.shape[1], device=weight.device, dtype=weight.dtype))
    return (others * distance).sum(-1) / (others.sum(-1) + 1e-6)


def with_none(logits: torch.Tensor) -> torch.Tensor:
    """(B, N) -> (B, N + 1): a softmin's "none of them" option at logit 0, last."""
    return torch.cat([logits, torch.zeros_like(logits[:, :1])], dim=-1)


def _either(logit: torch.Tensor, share: torch.Tensor) -> torch.Tensor:
    """The logit of "relevant by its score, or the answer hop's pick" (a noisy-OR of the two): an object the
    hop is sure of is relevant whatever its own score says, and a share near 0 leaves the score as it was."""
    log_neither = F.logsigmoid(-logit) + torch.log1p(-share.clamp(max=1 - 1e-6))
    return torch.log(-torch.expm1(log_neither).clamp(max=-1e-12)) - log_neither


def named_anchors(relevant: torch.Tensor) -> torch.Tensor:
    """(B, N) relevance targets -> (B, N) bool: the objects a question names beside its subject (relevance in
    (0, 1)), the anchors it places the subject against."""
    return (relevant > 0) & (relevant < 1)


def grounding_loss(
    logits: torch.Tensor,
    relevant: torch.Tensor,
    object_mask: torch.Tensor,
    hop: torch.Tensor | None = None,
    subject_match: bool = False,
    pos_weight: float = 2.0,
) -> torch.Tensor:
    """Binary cross-entropy of relevance over real objects (relevant objects are few, so they weigh
    `pos_weight`), plus that of being the subject over the relevant ones, plus that of being the anchor
    (named, not the subject) over the objects of every question that names an object. `relevant`: 1.0 for
    the subject (and its category), a value in (0, 1) for the other objects the question names, 0 elsewhere.

    `hop` (B,) bool: the batch's questions that find their subject through their anchor; given, the answer
    hop learns from them too (`answer_hop_loss`). `subject_match`: the subject match learns which object the
    other questions name as their subject (`subject_match_loss`).

    A question that names only its subject teaches "no anchor": taught only where there is one, the anchor
    score was free elsewhere, and its hop added noise that took the subject-first rate of "is ... in front
    of me?" from 0.76 to 0.56 (issue 22)."""
    weight = torch.tensor(pos_weight, device=logits.device)
    loss = F.binary_cross_entropy_with_logits(
        logits[..., 0][object_mask], (relevant[object_mask] > 0).float(), pos_weight=weight
    )
    anchor = named_anchors(relevant)
    placed = object_mask & (relevant > 0).any(1, keepdim=True)
    if placed.any():
        loss = loss + F.binary_cross_entropy_with_logits(logits[..., 2][placed], anchor[placed].float())
    named = object_mask & (relevant > 0)
    if named.any():
        loss = loss + F.binary_cross_entropy_with_logits(logits[..., 1][named], (relevant[named] == 1.0).float())
    if hop is not None:
        loss = loss + answer_hop_loss(logits[..., 3], relevant, object_mask, hop)
    if subject_match:
        hop = torch.zeros_like(object_mask[:, 0]) if hop is None else hop
        loss = loss + subject_match_loss(logits[..., 4], relevant, object_mask, hop)
    return loss


def answer_hop_loss(
    answer: torch.Tensor, relevant: torch.Tensor, object_mask: torch.Tensor, hop: torch.Tensor
) -> torch.Tensor:
    """Cross-entropy of the answer hop's softmin (its logits against "no hop"): on a question that hops
    (`hop`), the share on its subject (1.0; every object of the subject's category counts); on any other,
    that on "no hop"."""
    subject = (relevant == 1.0) & object_mask
    hop = hop & subject.any(1)  # a hop whose subject fell out of the object budget teaches nothing
    return _pick_loss(answer, subject, object_mask, hop, torch.ones_like(hop))


def subject_match_loss(
    pick: torch.Tensor, relevant: torch.Tensor, object_mask: torch.Tensor, hop: torch.Tensor
) -> torch.Tensor:
    """Cross-entropy of the subject match's softmax (its logits against "none"): on a question that names its
    subject, the share on it (every object of its category counts); on one whose subject is not in the room
    ("is there a lamp?" where there is none), that on "none". Questions that hop (`hop`) are not taught."""
    subject = (relevant == 1.0) & object_mask
    return _pick_loss(pick, subject, object_mask, subject.any(1), ~hop)


def _pick_loss(logits, subject, object_mask, asks, taught):
    """The mean over the `taught` questions of a softmax's cross-entropy (logits against "none" at 0): the
    share on the `subject` objects where the question `asks` for one, else the share on "none"."""
    log_share = torch.log_softmax(with_none(logits.masked_fill(~object_mask, -1e4)), dim=-1)
    target = torch.cat([subject & asks.unsqueeze(1), ~asks.unsqueeze(1)], dim=-1)
    per_question = -torch.logsumexp(log_share.masked_fill(~target, float("-inf")), dim=-1)
    return (per_question * taught).sum() / taught.sum().clamp_min(1)


class ObjectClassifier(nn.Module):
    """Point-encoder feature -> category logits and colour logits."""

    def __init__(self, feature_dim: int, num_labels: int, num_colors: int):
        super().__init__()
        self.label = nn.Linear(feature_dim, num_labels)
        self.color = nn.Linear(feature_dim, max(num_colors, 1))

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.label(features), self.color(features)


def classification_loss(
    classifier: ObjectClassifier, features: torch.Tensor, labels: torch.Tensor, colors: torch.Tensor
) -> torch.Tensor:
    label_logits, color_logits = classifier(features)
    loss = F.cross_entropy(label_logits.float(), labels)
    if (colors != IGNORE).any():
        loss = loss + F.cross_entropy(color_logits.float(), colors, ignore_index=IGNORE)
    return loss
