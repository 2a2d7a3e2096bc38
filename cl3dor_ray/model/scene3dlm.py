"""`Scene3DLM`: object tokens in front of the instruction, a transformers causal LM writes the answer.

    points (B, N, P, 6) --PointNet++--> (B, N, d) + location(centre, size)
        --spatial transformer--> (B, N, d) --projector--> (B, N, H) object tokens
    prefix = <s> "SYSTEM: ... SCENE:" [object tokens] " USER: {instruction} ASSISTANT:"   (left-padded)
    the LM scores or writes " {answer}</s>" after the prefix.

`candidate_logps` scores C answers per sample. The shared-prefix path encodes the scene and runs
the prefix through the LM once, then expands its KV cache over the C continuations; the naive path
(TRL-style concatenation, kept as the reference) runs everything C times.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedModel, Qwen2Config

from cl3dor_ray.config import ModelConfig
from cl3dor_ray.model.batch import SceneBatch
from cl3dor_ray.model.pointnet import PointNetPP
from cl3dor_ray.model.prompt import before_objects

PARTS = ("point_encoder", "spatial", "projector", "lm")
MODES = ("train", "freeze", "lora")


def build_lm(cfg: ModelConfig, vocab_size: int) -> PreTrainedModel:
    """A causal LM from config (tiny, for CPU), or from a local folder (never from a hub)."""
    if cfg.lm.path:
        return AutoModelForCausalLM.from_pretrained(cfg.lm.path, local_files_only=True, use_safetensors=True)
    lm = cfg.lm
    config_cls = LlamaConfig if lm.arch == "llama" else Qwen2Config
    config = config_cls(vocab_size=vocab_size, hidden_size=lm.hidden_size, intermediate_size=lm.intermediate_size,
                        num_hidden_layers=lm.num_layers, num_attention_heads=lm.num_heads,
                        num_key_value_heads=lm.num_kv_heads, max_position_embeddings=lm.max_positions,
                        tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return AutoModelForCausalLM.from_config(config)


class Scene3DLM(nn.Module):
    def __init__(self, cfg: ModelConfig, lm: PreTrainedModel, tokenizer):
        super().__init__()
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.point_encoder = PointNetPP(tuple(cfg.sa1), tuple(cfg.sa2), tuple(cfg.point_widths))
        d = self.point_encoder.out_dim
        hidden = lm.get_input_embeddings().embedding_dim
        self.location = nn.Sequential(nn.Linear(6, d), nn.GELU(), nn.Linear(d, d))
        layer = nn.TransformerEncoderLayer(d, cfg.spatial_heads, 2 * d, dropout=0.0, batch_first=True, norm_first=True)
        self.spatial = nn.TransformerEncoder(layer, cfg.spatial_layers, enable_nested_tensor=False)
        self.projector = nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.lm = lm
        self.register_buffer("_before_ids", torch.tensor(
            [tokenizer.bos_token_id] + tokenizer(before_objects(), add_special_tokens=False).input_ids), persistent=False)

    # ------------------------------------------------------------------ the prefix
    def object_tokens(self, batch: SceneBatch) -> torch.Tensor:
        """(B, N, H): one LM token per object."""
        b, n, p, _ = batch.points.shape
        dtype = self.projector[0].weight.dtype  # bf16 under DeepSpeed on GPUs; batches arrive in float32
        if batch.features is not None:  # cached point-encoder features (serving)
            feats = batch.features.to(dtype)
        else:
            feats = self.point_encoder(batch.points.reshape(b * n, p, 6).to(dtype)).view(b, n, -1)
        feats = feats + self.location(torch.cat([batch.centers, batch.sizes], dim=-1).to(dtype))
        feats = self.spatial(feats, src_key_padding_mask=~batch.object_mask)
        return self.projector(feats)

    def embed_prefix(self, batch: SceneBatch, objects: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded prefix embeddings (B, L, H) and attention mask (B, L)."""
        embed = self.lm.get_input_embeddings()
        before = embed(self._before_ids)
        after = embed(batch.instruction_ids)
        rows = []
        for i in range(objects.shape[0]):
            rows.append(torch.cat([before, objects[i][batch.object_mask[i]],
                                   after[i][batch.instruction_mask[i].bool()]]))
        width = max(r.shape[0] for r in rows)
        emb = torch.stack([F.pad(r, (0, 0, width - r.shape[0], 0)) for r in rows])
        mask = torch.stack([F.pad(torch.ones(r.shape[0], dtype=torch.long, device=r.device), (width - r.shape[0], 0))
                            for r in rows])
        return emb, mask

    @staticmethod
    def _positions(mask: torch.Tensor) -> torch.Tensor:
        return (mask.cumsum(-1) - 1).clamp_min(0)

    # ------------------------------------------------------------------ scoring
    def forward(self, batch: SceneBatch, shared: bool = True) -> torch.Tensor:
        """(B, C) mean log-probability per candidate: what training and the DeepSpeed engine call."""
        return self.candidate_logps(batch, shared=shared)[0]

    def candidate_logps(self, batch: SceneBatch, shared: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and summed log-probability of each candidate's tokens: two (B, C) float32 tensors."""
        c = batch.num_candidates
        if c == 0:
            raise ValueError("candidate_logps needs a batch with candidates (SceneBatch.cand_ids is empty)")
        ids = batch.cand_ids.flatten(0, 1)  # (B*C, Lc)
        cmask = batch.cand_mask.flatten(0, 1)
        logits = self._shared_logits(batch, ids, cmask) if shared else self._naive_logits(batch, ids, cmask)
        logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
        summed = (logp * cmask).sum(-1)
        mean = summed / cmask.sum(-1)
        return mean.view(-1, c), summed.view(-1, c)

    def _shared_logits(self, batch, ids, cmask) -> torch.Tensor:
        c = batch.num_candidates
        emb, mask = self.embed_prefix(batch, self.object_tokens(batch))
        out = self.lm(inputs_embeds=emb, attention_mask=mask, position_ids=self._positions(mask),
                      use_cache=True, logits_to_keep=1)
        cache = out.past_key_values
        cache.batch_repeat_interleave(c)  # differentiable: gradients of all C answers reach the prefix
        first = out.logits[:, -1:].repeat_interleave(c, dim=0)  # predicts each candidate's first token
        if ids.shape[1] == 1:
            return first
        prefix_mask = mask.repeat_interleave(c, dim=0)
        pos = prefix_mask.sum(-1, keepdim=True) + torch.arange(ids.shape[1] - 1, device=ids.device)
        rest = self.lm(input_ids=ids[:, :-1], attention_mask=torch.cat([prefix_mask, cmask[:, :-1]], dim=1),
                       position_ids=pos, past_key_values=cache, use_cache=False)
        return torch.cat([first, rest.logits], dim=1)

    def _naive_logits(self, batch, ids, cmask) -> torch.Tensor:
        """Reference: the whole scene and prompt once per candidate, as concatenated batches do."""
        c = batch.num_candidates
        repeated = SceneBatch(*(getattr(batch, f).repeat_interleave(c, dim=0) for f in
                                ("points", "object_mask", "centers", "sizes", "instruction_ids", "instruction_mask")),
                              batch.cand_ids.flatten(0, 1)[:, None], batch.cand_mask.flatten(0, 1)[:, None],
                              None if batch.features is None else batch.features.repeat_interleave(c, dim=0))
        emb, mask = self.embed_prefix(repeated, self.object_tokens(repeated))
        emb = torch.cat([emb, self.lm.get_input_embeddings()(ids[:, :-1])], dim=1)
        mask = torch.cat([mask, cmask[:, :-1]], dim=1)
        out = self.lm(inputs_embeds=emb, attention_mask=mask, position_ids=self._positions(mask),
                      use_cache=False, logits_to_keep=ids.shape[1])
        return out.logits

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def point_features(self, clouds: list[dict], num_points: int, chunk: int = 64) -> list[torch.Tensor]:
        """Point-encoder features of object rows (points, colors), for a serving cache."""
        from cl3dor_ray.model.batch import cloud_array

        out = []
        for i in range(0, len(clouds), chunk):
            pts = torch.from_numpy(np.stack([cloud_array(o, num_points) for o in clouds[i: i + chunk]]))
            out += list(self.point_encoder(pts.to(self.projector[0].weight.dtype)).float())
        return out

    @torch.no_grad()
    def generate_ids(self, batch: SceneBatch, max_new_tokens: int = 32, num_beams: int = 1,
                     repetition_penalty: float = 1.0) -> torch.Tensor:
        """Greedy (num_beams=1) or beam search; (B, <= max_new_tokens) new token ids."""
        emb, mask = self.embed_prefix(batch, self.object_tokens(batch))
        # with inputs_embeds the repetition penalty sees the generated tokens only, which is what we want:
        # the prompt's words are not repetitions of the answer
        return self.lm.generate(inputs_embeds=emb, attention_mask=mask, max_new_tokens=max_new_tokens,
                                num_beams=num_beams, do_sample=False, repetition_penalty=repetition_penalty,
                                pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.tokenizer.eos_token_id,
                                bos_token_id=self.tokenizer.bos_token_id)

    def generate(self, batch: SceneBatch, **kwargs) -> list[str]:
        ids = self.generate_ids(batch, **kwargs)
        return [t.strip() for t in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]

    # ------------------------------------------------------------------ what trains
    def set_trainable(self, **modes: str) -> None:
        """Per part ("point_encoder", "spatial", "projector", "lm"): "train", "freeze", or "lora" (LM only).

        The location encoder trains with the spatial transformer.
        """
        from cl3dor_ray.model.lora import attach_lora

        for part, mode in modes.items():
            if part not in PARTS or mode not in MODES or (mode == "lora" and part != "lm"):
                raise ValueError(f"set_trainable: {part}={mode!r}; expected parts {PARTS} with modes "
                                 f"{MODES} ('lora' only for lm)")
        for part, mode in modes.items():
            if part == "lm" and mode == "lora":
                self.lm = attach_lora(self.lm, self.cfg.lora)
                for name, p in self.lm.named_parameters():
                    p.requires_grad = "lora_" in name
                continue
            modules = [self.spatial, self.location] if part == "spatial" else [getattr(self, part)]
            for module in modules:
                for p in module.parameters():
                    p.requires_grad = mode == "train"
