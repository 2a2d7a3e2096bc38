"""`Scene3DLM`: object tokens in front of the instruction, a transformers causal LM writes the answer.

    points (B, N, P, 6) --PointNet++--> (B, N, d) point features + location(centre, size)
        --spatial transformer (optional)--> --projector--> (B, N, H) object tokens, RMS-normalised
    grounding head (point features, boxes, instruction) --> the objects the instruction is about,
        its subject first --> per object two focus tokens, each + a learned slot embedding: its object
        token again, and an embedding of where it is (from the agent, and from the first focus object)
    prefix = <s> "SYSTEM: ... SCENE:" [object tokens] " USER: {instruction}" [focus tokens] " ASSISTANT:"
    the LM scores or writes " {answer}</s>" after the prefix (left-padded).

Why the focus tokens (measured on the synthetic rooms, issue 12): the LM learned to read a lone
object's colour in 300 steps, but among ~20 object tokens it could not find the one a question was
about, even when LEO's "relevant objects first" put it first: nothing in the sequence says "first"
(RoPE is relative, the spatial transformer permutation-equivariant). With the grounding head's
objects repeated right after the instruction, colour EM went from the text-only prior (0.29) to 0.77
in the same 800 steps. (Placed after "ASSISTANT:", they also worked, but the answer position then
sat on an object token and the tiny LM lost the question's type: "no" to "near or far?".) The scene's
own tokens stay in LEO's question-independent order, so a scene's prefix can be shared by every
question about it. Object tokens are normalised to a fixed
RMS: unnormalised they were 80x the word embeddings' norm.

Why "where" tokens (issue 22): a situated question's answer is the focus object's bearing from the
agent ("which way to turn": the sign of its y in the agent's frame); the object tokens carry their
position only inside a learned location embedding. Given the object's geometry as features of its
own (bearing, range, offset from the first focus object, vertical gaps), added to the focus token,
the tiny LM learned "which way" in some seeds (EM 0.64-0.89 over 3 seeds, 2,000 steps); as a token
of its own after the object's, in all of them (0.81-0.92), and the answers followed the agent when it
turned around (0.81-0.92).

`candidate_logps` scores up to C answers per sample (a sample may bring fewer). The shared-prefix path
encodes the scene and runs the prefix through the LM once, then gathers its KV cache for each of the
sample's answers; the naive path (TRL-style concatenation, kept as the reference) runs everything once
per answer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedModel, Qwen2Config

from cl3dor_ray.config import ModelConfig
from cl3dor_ray.model.batch import SceneBatch
from cl3dor_ray.model.focus import (
    FOCUS_GEOMETRY,
    WHERE_WORDS,
    WhereWords,
    focus_geometry_features,
    relation_to_reference,
    where_axes,
)
from cl3dor_ray.model.grounding import GroundingHead, ObjectClassifier
from cl3dor_ray.model.pointnet import PointNetPP
from cl3dor_ray.model.prompt import prompt_for


@dataclass
class ScenePrefix:
    """What every question about a scene shares (Scene3DLM.scene_prefixes): its object tokens (N, H) and
    the LM's key and value cache of the prompt up to the instruction, per layer (kv heads, L, head dim)."""

    tokens: torch.Tensor
    kv: list[tuple[torch.Tensor, torch.Tensor]]

    @property
    def length(self) -> int:
        return self.kv[0][0].shape[1]

    @property
    def nbytes(self) -> int:
        return self.tokens.nbytes + sum(k.nbytes + v.nbytes for k, v in self.kv)


PARTS = ("point_encoder", "spatial", "projector", "lm", "grounding", "object_classifier")
MODES = ("train", "freeze", "lora")


def build_lm(cfg: ModelConfig, vocab_size: int) -> PreTrainedModel:
    """A causal LM from config (tiny, for CPU), or from a local folder (never from a hub)."""
    if cfg.lm.path:
        return AutoModelForCausalLM.from_pretrained(cfg.lm.path, local_files_only=True, use_safetensors=True)
    lm = cfg.lm
    config_cls = LlamaConfig if lm.arch == "llama" else Qwen2Config
    config = config_cls(
        vocab_size=vocab_size,
        hidden_size=lm.hidden_size,
        intermediate_size=lm.intermediate_size,
        num_hidden_layers=lm.num_layers,
        num_attention_heads=lm.num_heads,
        num_key_value_heads=lm.num_kv_heads,
        max_position_embeddings=lm.max_positions,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    return AutoModelForCausalLM.from_config(config)


def _word_table(tokenizer, prompt, words: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(W, T) token ids of each word as an answer would spell it, right-padded, and their mask."""
    rows = [tokenizer(prompt.answer(w), add_special_tokens=False).input_ids or [tokenizer.eos_token_id] for w in words]
    ids = torch.zeros(len(rows), max(map(len, rows)), dtype=torch.long)
    mask = torch.zeros(ids.shape)
    for i, r in enumerate(rows):
        ids[i, : len(r)], mask[i, : len(r)] = torch.tensor(r), 1
    return ids, mask


def _rms(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """x rescaled so that each vector's RMS is `target`."""
    return x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-6).to(x.dtype) * target.to(x.dtype)


class Scene3DLM(nn.Module):
    def __init__(self, cfg: ModelConfig, lm: PreTrainedModel, tokenizer):
        super().__init__()
        self.cfg = cfg
        self.tokenizer = tokenizer
        # a pretrained base LM that some stage trained in full (set_trainable lm="train"): its folder must
        # then carry the base's weights, not only an adapter (model/io.py reads and writes it)
        self.lm_base_trained = False
        prompt = prompt_for(tokenizer)
        self.point_encoder = PointNetPP(tuple(cfg.sa1), tuple(cfg.sa2), tuple(cfg.point_widths))
        d = self.point_encoder.out_dim
        hidden = lm.get_input_embeddings().embedding_dim
        self.location = nn.Sequential(nn.Linear(6, d), nn.GELU(), nn.Linear(d, d))
        self.spatial = None  # spatial_layers = 0: each object token sees only its own object (see the config)
        if cfg.spatial_layers:
            layer = nn.TransformerEncoderLayer(
                d, cfg.spatial_heads, 2 * d, dropout=0.0, batch_first=True, norm_first=True
            )
            self.spatial = nn.TransformerEncoder(layer, cfg.spatial_layers, enable_nested_tensor=False)
        self.projector = nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.lm = lm
        self.object_classifier = (
            ObjectClassifier(d, len(cfg.object_labels), len(cfg.object_colors)) if cfg.object_labels else None
        )
        self.grounding = None
        if cfg.grounding.enabled:
            # the head reads each object's features and the classifier's category and colour beliefs: a
            # question names categories, and beliefs generalise to unseen rooms where raw features overfit
            beliefs = (len(cfg.object_labels), max(len(cfg.object_colors), 1)) if self.object_classifier else (0, 0)
            self.grounding = GroundingHead(cfg.grounding, len(tokenizer), d + sum(beliefs), beliefs)
            self.slots = nn.Parameter(torch.randn(cfg.max_objects, hidden))  # "first focus object", "second", ...
            # where each focus object is: from the agent (or the room's origin), and from the first focus object
            self.focus_geometry = nn.Sequential(nn.Linear(FOCUS_GEOMETRY, d), nn.GELU(), nn.Linear(d, hidden))
            self.where_words = WhereWords() if cfg.where_words else None
            self.where_tokens = cfg.where_tokens
            if self.where_tokens == "auto":  # config.py: what each kind of LM was measured to read
                self.where_tokens = "mixture" if cfg.lm.path else "differences"
            if self.where_words is not None:
                ids, mask = _word_table(tokenizer, prompt, list(WHERE_WORDS))
                self.register_buffer("_where_word_ids", ids, persistent=False)
                self.register_buffer("_where_word_mask", mask, persistent=False)
        self.word_heads = []  # (classifier output, its words' token ids, mask)
        if cfg.object_words and cfg.object_labels:
            for head, words in (("label", cfg.object_labels), ("color", cfg.object_colors)):
                if words:
                    ids, mask = _word_table(tokenizer, prompt, words)
                    self.register_buffer(f"_{head}_word_ids", ids, persistent=False)
                    self.register_buffer(f"_{head}_word_mask", mask, persistent=False)
                    self.word_heads.append(head)
        # persistent: the embeddings of an LM trained from scratch move, the scale the tokens were trained at must not
        rms = cfg.object_token_rms or float(lm.get_input_embeddings().weight.detach().float().pow(2).mean().sqrt())
        self.register_buffer("token_rms", torch.tensor(rms))
        self.register_buffer(
            "_before_ids",
            torch.tensor(
                [tokenizer.bos_token_id] * prompt.bos + tokenizer(prompt.before, add_special_tokens=False).input_ids
            ),
            persistent=False,
        )
        self.register_buffer(
            "_after_ids", torch.tensor(tokenizer(prompt.after, add_special_tokens=False).input_ids), persistent=False
        )

    # ------------------------------------------------------------------ the prefix
    def point_feats(self, batch: SceneBatch) -> torch.Tensor:
        """(B, N, d) point-encoder features, or the cached ones a serving batch brings."""
        b, n, p, _ = batch.points.shape
        dtype = self.projector[0].weight.dtype  # bf16 under DeepSpeed on GPUs; batches arrive in float32
        if batch.features is not None:
            return batch.features.to(dtype)
        return self.point_encoder(batch.points.reshape(b * n, p, 6).to(dtype)).view(b, n, -1)

    def relevance_logits(self, batch: SceneBatch, feats: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N) the grounding head's logit that each object is one the instruction is about."""
        return self.grounding_logits(batch, feats)[..., 0]

    def grounding_logits(self, batch: SceneBatch, feats: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N, 5) the grounding head's logits that each object is one the instruction is about, that it
        is the instruction's subject, that it is the anchor the instruction places the subject against, that
        it is the answer the instruction hops to from that anchor (against "no hop" at 0), and that it is the
        subject the instruction names (the subject match, against "none" at 0)."""
        if self.grounding is None:
            raise ValueError("model.grounding.enabled is false: this model has no grounding head")
        feats = self.point_feats(batch) if feats is None else feats
        if self.object_classifier is not None:
            with torch.no_grad():  # trained with the encoder, frozen since
                label, color = self.object_classifier(feats)
            feats = torch.cat([feats, label.softmax(-1).to(feats.dtype), color.softmax(-1).to(feats.dtype)], dim=-1)
        return self.grounding(
            feats,
            torch.cat([batch.centers, batch.sizes], dim=-1),
            batch.object_mask,
            batch.instruction_ids,
            batch.instruction_mask,
        )

    def focus_order(
        self, batch: SceneBatch, feats: torch.Tensor, logits: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N) object indices, the instruction's objects first (most relevant first), and (B,) how many
        there are: the given ones where `batch.given`, else those the grounding head scores above 0; at
        most model.grounding.max_focus. `logits`: the head's, in eval mode, where the caller has them."""
        if logits is None:
            training = self.grounding.training
            self.grounding.eval()  # its dropout (model.grounding.dropout) is for its own stage
            try:
                with torch.no_grad():  # the head trained in its own stage; the LM's loss does not move it
                    logits = self.grounding_logits(batch, feats)
            finally:
                self.grounding.train(training)
        given = batch.given.unsqueeze(1)
        chosen = torch.where(given, batch.relevant > 0, logits[..., 0] > 0) & batch.object_mask
        # the chosen objects ordered by how surely each is the subject, then the anchor (second, as the
        # annotation's order has it: the where words read the subject against it), relevance breaking ties
        p = torch.sigmoid(logits)
        subject = 0.6 * p[..., 1] + 0.3 * p[..., 2] + 0.1 * p[..., 0]
        score = torch.where(given, batch.relevant, subject)
        key = chosen.float() * 2 + score * chosen - (~batch.object_mask).float() * 4
        count = chosen.sum(1).clamp(max=self.cfg.grounding.max_focus)
        return torch.argsort(key, dim=1, descending=True, stable=True), count

    def scene_tokens(self, batch: SceneBatch, feats: torch.Tensor) -> torch.Tensor:
        """(B, N, H) the scene's object tokens: what every question about the scene shares."""
        x = feats + self.location(torch.cat([batch.centers, batch.sizes], dim=-1).to(feats.dtype))
        if self.spatial is not None:
            x = self.spatial(x, src_key_padding_mask=~batch.object_mask)
        tokens = _rms(self.projector(x), self.token_rms)
        if self.word_heads:
            tokens = tokens + self.object_words(feats).to(tokens.dtype)
        return tokens

    def object_tokens(self, batch: SceneBatch, tokens: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The scene's object tokens (B, N, H) with their mask (B, N), and the focus tokens (B, N, 2, H): per
        object its token and where it is, of which the first `focus_count` (B,) objects are used. `tokens`: the
        scene tokens, when a prefix cache has them."""
        feats = self.point_feats(batch)
        tokens = self.scene_tokens(batch, feats) if tokens is None else tokens
        out = {
            "tokens": tokens,
            "mask": batch.object_mask,
            "focus_count": torch.zeros_like(batch.given, dtype=torch.long),
        }
        if self.grounding is not None:
            order, out["focus_count"] = self.focus_order(batch, feats)
            focus = torch.gather(tokens, 1, order.unsqueeze(-1).expand_as(tokens))
            index = order.unsqueeze(-1).expand(-1, -1, 3)
            where = focus_geometry_features(torch.gather(batch.centers, 1, index), torch.gather(batch.sizes, 1, index))
            geometry = _rms(self.focus_geometry(where.to(focus.dtype)), self.token_rms)
            if self.where_words is not None:
                centers = torch.gather(batch.centers, 1, index)
                figures, has = relation_to_reference(centers, out["focus_count"], batch.situated)
                weights = self.where_words(figures) * has.unsqueeze(-1)
                table = self._word_embeddings(self._where_word_ids, self._where_word_mask)
                weights = weights.to(table.dtype)
                words = where_axes(weights, table) if self.where_tokens == "differences" else weights @ table
                geometry = geometry + _rms(words, self.token_rms).to(geometry.dtype)
            slots = (self.slots[: focus.shape[1]] * self.token_rms).to(focus.dtype)
            # each focus object is two tokens: the object itself, then where it is (B, N, 2, H)
            out["focus"] = torch.stack([focus + slots, geometry + slots], dim=2)
        return out

    def object_words(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, N, H) the classifier's category and colour beliefs as the LM's word embeddings, at token RMS."""
        with torch.no_grad():  # the classifier trained with the encoder; here it only reads
            logits = dict(zip(("label", "color"), self.object_classifier(feats)))
        words = 0
        for head in self.word_heads:
            table = self._word_embeddings(getattr(self, f"_{head}_word_ids"), getattr(self, f"_{head}_word_mask"))
            words = words + logits[head].float().softmax(-1).to(table.dtype) @ table
        return _rms(words, self.token_rms)

    def _word_embeddings(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(W, H) each word's embedding in the LM: the mean of its tokens' (from _word_table)."""
        embed = self.lm.get_input_embeddings()
        return (embed(ids) * mask.unsqueeze(-1).to(embed.weight.dtype)).sum(1) / mask.sum(1, keepdim=True)

    def _question_rows(self, batch: SceneBatch, objects: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """Per sample, the embeddings after the scene: the instruction, its focus tokens, " ASSISTANT:"."""
        embed = self.lm.get_input_embeddings()
        after, instruction = embed(self._after_ids), embed(batch.instruction_ids)
        count = objects["focus_count"].tolist()
        return [
            torch.cat(
                [
                    instruction[i][batch.instruction_mask[i].bool()],
                    objects["focus"][i, : count[i]].flatten(0, 1).to(after.dtype) if count[i] else after[:0],
                    after,
                ]
            )
            for i in range(len(count))
        ]

    @staticmethod
    def _left_pad(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(L_i, H) rows -> left-padded (B, L, H) and their attention mask (B, L)."""
        width = max(r.shape[0] for r in rows)
        emb = torch.stack([F.pad(r, (0, 0, width - r.shape[0], 0)) for r in rows])
        mask = torch.stack(
            [F.pad(torch.ones(r.shape[0], dtype=torch.long, device=r.device), (width - r.shape[0], 0)) for r in rows]
        )
        return emb, mask

    def embed_prefix(self, batch: SceneBatch, objects: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded prefix embeddings (B, L, H) and attention mask (B, L); `objects` from object_tokens."""
        before = self.lm.get_input_embeddings()(self._before_ids)
        tokens, mask = objects["tokens"].to(before.dtype), objects["mask"]
        emb, mask = self._left_pad(
            [
                torch.cat([before, tokens[i][mask[i]], question])
                for i, question in enumerate(self._question_rows(batch, objects))
            ]
        )
        if "focus" in objects and not objects["focus_count"].any():
            # Every trainable parameter must get a gradient on every rank at every step: when no sample of a
            # batch has focus objects, the slots would get none on this rank only, ZeRO's gradient buckets
            # would differ between ranks, and the all-reduce aborts (gloo). Zero-weighted, it changes nothing.
            emb = emb + 0.0 * objects["focus"].sum()
        return emb, mask

    # ------------------------------------------------------------------ the scene's prefix, cached
    @torch.no_grad()
    def scene_prefixes(self, batch: SceneBatch) -> list["ScenePrefix"]:
        """Per sample, what no question about its scene changes: its object tokens and the LM's KV cache of
        the prompt up to the instruction ([BOS] "SYSTEM: ... SCENE:" [object tokens]). Serving keeps these
        per (model, scene, object order) and runs only the instruction and the answer (`prefixes=`)."""
        tokens = self.scene_tokens(batch, self.point_feats(batch))
        before = self.lm.get_input_embeddings()(self._before_ids)
        out = []
        for i in range(tokens.shape[0]):
            mine = tokens[i][batch.object_mask[i]]
            run = self.lm(
                inputs_embeds=torch.cat([before, mine.to(before.dtype)])[None], use_cache=True, logits_to_keep=1
            )
            kv = [(layer.keys[0].clone(), layer.values[0].clone()) for layer in run.cache.layers]
            out.append(ScenePrefix(mine.clone(), kv))
        return out

    def _with_prefixes(self, batch: SceneBatch, prefixes: list["ScenePrefix"]):
        """The cached prefixes as one left-padded KV cache, and the rest of the prompt (instruction, focus
        tokens, " ASSISTANT:") left-padded after them: (cache, suffix embeddings (B, Ls, H), the attention
        mask over both (B, Lp + Ls)). The padding between the two is masked, and positions count only real
        tokens, so every token sits where the uncached prompt puts it."""
        from transformers import DynamicCache

        b, n = batch.object_mask.shape
        tokens = torch.zeros(
            b, n, prefixes[0].tokens.shape[-1], dtype=prefixes[0].tokens.dtype, device=batch.object_mask.device
        )
        for i, p in enumerate(prefixes):
            tokens[i][batch.object_mask[i]] = p.tokens
        suffix, suffix_mask = self._left_pad(self._question_rows(batch, self.object_tokens(batch, tokens=tokens)))
        lp = max(p.length for p in prefixes)
        prefix_mask = torch.stack([F.pad(torch.ones(p.length, dtype=torch.long), (lp - p.length, 0)) for p in prefixes])
        cache = DynamicCache()
        for layer in range(len(prefixes[0].kv)):
            keys, values = ([F.pad(p.kv[layer][j], (0, 0, lp - p.length, 0)) for p in prefixes] for j in (0, 1))
            cache.update(torch.stack(keys), torch.stack(values), layer)
        return cache, suffix, torch.cat([prefix_mask, suffix_mask], dim=1).to(suffix.device)

    @staticmethod
    def _positions(mask: torch.Tensor) -> torch.Tensor:
        return (mask.cumsum(-1) - 1).clamp_min(0)

    # ------------------------------------------------------------------ scoring
    def forward(self, batch: SceneBatch, shared: bool = True) -> torch.Tensor:
        """(B, C) mean log-probability per candidate: what training and the DeepSpeed engine call."""
        return self.candidate_logps(batch, shared=shared)[0]

    def candidate_logps(
        self, batch: SceneBatch, shared: bool = True, prefixes: list["ScenePrefix"] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and summed log-probability of each candidate's tokens: two (B, C) float32 tensors, 0 in the
        empty slots of samples with fewer candidates (SceneBatch.cand_present), which are never computed.
        `prefixes`: the samples' cached scene prefixes (scene_prefixes), for scoring without gradients."""
        c = batch.num_candidates
        if c == 0:
            raise ValueError("candidate_logps needs a batch with candidates (SceneBatch.cand_ids is empty)")
        present = batch.cand_present
        rows, cols = present.nonzero(as_tuple=True)  # the candidates there are, sample by sample
        cmask = batch.cand_mask[rows, cols]
        width = int(cmask.sum(-1).max())
        ids, cmask = batch.cand_ids[rows, cols, :width], cmask[:, :width]
        logits = (
            self._shared_logits(batch, rows, ids, cmask, prefixes)
            if shared or prefixes
            else self._naive_logits(batch, rows, ids, cmask)
        )
        logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
        summed = (logp * cmask).sum(-1)
        grid = torch.zeros(present.shape, dtype=summed.dtype, device=summed.device)
        return grid.index_put((rows, cols), summed / cmask.sum(-1)), grid.index_put((rows, cols), summed)

    def _shared_logits(self, batch, rows, ids, cmask, prefixes=None) -> torch.Tensor:
        """The prefix (scene, instruction, focus tokens) runs once per sample; its KV cache is then gathered
        for every candidate (`rows`: each candidate's sample), differentiably, and only the answers run."""
        if prefixes:
            cache, emb, mask = self._with_prefixes(batch, prefixes)
            out = self.lm(
                inputs_embeds=emb,
                attention_mask=mask,
                position_ids=self._positions(mask)[:, -emb.shape[1] :],
                cache=cache,
                use_cache=True,
                logits_to_keep=1,
            )
        else:
            emb, mask = self.embed_prefix(batch, self.object_tokens(batch))
            out = self.lm(
                inputs_embeds=emb,
                attention_mask=mask,
                position_ids=self._positions(mask),
                use_cache=True,
                logits_to_keep=1,
            )
        cache = out.cache
        cache.batch_select_indices(rows)  # an index gather: gradients of every answer reach its prefix
        first = out.logits[rows, -1:]  # predicts each candidate's first token
        if ids.shape[1] == 1:
            return first
        prefix_mask = mask[rows]
        pos = prefix_mask.sum(-1, keepdim=True) + torch.arange(ids.shape[1] - 1, device=ids.device)
        rest = self.lm(
            input_ids=ids[:, :-1],
            attention_mask=torch.cat([prefix_mask, cmask[:, :-1]], dim=1),
            position_ids=pos,
            cache=cache,
            use_cache=False,
        )
        return torch.cat([first, rest.logits], dim=1)

    def _naive_logits(self, batch, rows, ids, cmask) -> torch.Tensor:
        """Reference: the whole scene and prompt once per candidate, as concatenated batches do."""
        rep = {f: None if getattr(batch, f) is None else getattr(batch, f)[rows] for f in batch.__dataclass_fields__}
        repeated = SceneBatch(**{**rep, "cand_ids": ids[:, None], "cand_mask": cmask[:, None]})
        emb, mask = self.embed_prefix(repeated, self.object_tokens(repeated))
        emb = torch.cat([emb, self.lm.get_input_embeddings()(ids[:, :-1])], dim=1)
        mask = torch.cat([mask, cmask[:, :-1]], dim=1)
        out = self.lm(
            inputs_embeds=emb,
            attention_mask=mask,
            position_ids=self._positions(mask),
            use_cache=False,
            logits_to_keep=ids.shape[1],
        )
        return out.logits

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def point_features(self, clouds: list[dict], num_points: int, chunk: int = 64) -> list[torch.Tensor]:
        """Point-encoder features (on the CPU) of object rows (points, colors): a serving cache, or a frozen
        encoder's features computed once for a training stage."""
        from cl3dor_ray.data.clouds import cloud_array

        weight = self.projector[0].weight
        out = []
        for i in range(0, len(clouds), chunk):
            pts = torch.from_numpy(np.stack([cloud_array(o, num_points) for o in clouds[i : i + chunk]]))
            out += list(self.point_encoder(pts.to(device=weight.device, dtype=weight.dtype)).float().cpu())
        return out

    @torch.no_grad()
    def generate_ids(
        self,
        batch: SceneBatch,
        max_new_tokens: int = 32,
        num_beams: int = 1,
        repetition_penalty: float = 1.0,
        prefixes: list["ScenePrefix"] | None = None,
    ) -> torch.Tensor:
        """Greedy (num_beams=1) or beam search; (B, <= max_new_tokens) new token ids. With `prefixes` (the
        samples' cached scene prefixes) only the instruction onwards runs through the LM."""
        cache = None
        if prefixes:
            cache, suffix, mask = self._with_prefixes(batch, prefixes)
            if num_beams > 1:  # generate expands the inputs to B x beams; the cache must match
                cache.batch_repeat_interleave(num_beams)
            # generate runs the positions the cache does not hold: the prefix's embeddings are never read
            emb = torch.cat(
                [suffix.new_zeros(suffix.shape[0], mask.shape[1] - suffix.shape[1], suffix.shape[2]), suffix], dim=1
            )
        else:
            emb, mask = self.embed_prefix(batch, self.object_tokens(batch))
        # with inputs_embeds the repetition penalty sees the generated tokens only, which is what we want:
        # the prompt's words are not repetitions of the answer
        return self.lm.generate(
            inputs_embeds=emb,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            cache=cache,
            num_beams=num_beams,
            do_sample=False,
            repetition_penalty=repetition_penalty,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
            bos_token_id=self.tokenizer.bos_token_id,
        )

    def generate(self, batch: SceneBatch, **kwargs) -> list[str]:
        ids = self.generate_ids(batch, **kwargs)
        return [t.strip() for t in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]

    # ------------------------------------------------------------------ what trains
    def set_trainable(self, **modes: str) -> None:
        """Per part ("point_encoder", "spatial", "projector", "lm", "grounding", "object_classifier"):
        "train", "freeze", or "lora" (LM only). Parts not named keep their state.

        The location encoder, the focus slots and the focus geometry train with the spatial transformer.
        """
        from cl3dor_ray.model.lora import attach_lora

        for part, mode in modes.items():
            if part not in PARTS or mode not in MODES or (mode == "lora" and part != "lm"):
                raise ValueError(
                    f"set_trainable: {part}={mode!r}; expected parts {PARTS} with modes {MODES} ('lora' only for lm)"
                )
        for part, mode in modes.items():
            if part == "lm" and mode == "train":
                self.lm_base_trained = True
            if part == "lm" and mode == "lora":
                self.lm = attach_lora(self.lm, self.cfg.lora)
                for name, p in self.lm.named_parameters():
                    p.requires_grad = "lora_" in name
                continue
            if part == "spatial":
                params = [*self.location.parameters(), *(self.spatial.parameters() if self.spatial else [])]
                if self.grounding is not None:
                    params += [self.slots, *self.focus_geometry.parameters()]
                    params += list(self.where_words.parameters()) if self.where_words is not None else []
            else:
                module = getattr(self, part)
                params = [] if module is None else list(module.parameters())
            for p in params:
                p.requires_grad = mode == "train"
