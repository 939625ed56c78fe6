"""Captions → text-encoder conditioning, for training (sampling uses the diffusers pipeline).

* SD1/SD2: one CLIP text encoder; ``clip_skip`` N takes the Nth-last hidden layer and applies the final
  layer norm (kohya's behaviour).
* SDXL: both encoders' penultimate layers concatenated, plus the pooled projection of the second.
* ``max_token_length`` 150/225: the caption is cut into 75-token chunks, each encoded as
  ``<bos> chunk <eos>``; the outputs are joined (first chunk's <bos>, last chunk's <eos>), 2 + 75·n tokens.
"""

from __future__ import annotations

import torch


def _chunks(tokenizer, captions: list[str], max_token_length: int) -> list[torch.Tensor]:
    n = max(1, max_token_length // 75)
    ids = tokenizer(captions, padding="max_length", truncation=True, max_length=75 * n + 2,
                    return_tensors="pt").input_ids
    if n == 1:
        return [ids]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    body = ids[:, 1:-1]
    out = []
    for i in range(n):
        part = body[:, 75 * i:75 * (i + 1)]
        first = torch.full((ids.shape[0], 1), bos, dtype=ids.dtype)
        # a chunk that ends inside the caption gets <eos>; one that is all padding keeps padding
        last_tok = part[:, -1:]
        end = torch.where((last_tok == pad) | (last_tok == eos), torch.full_like(last_tok, pad),
                          torch.full_like(last_tok, eos))
        out.append(torch.cat([first, part, end], dim=1))
    return out


def _join(states: list[torch.Tensor]) -> torch.Tensor:
    if len(states) == 1:
        return states[0]
    parts = [states[0][:, :-1]] + [s[:, 1:-1] for s in states[1:-1]] + [states[-1][:, 1:]]
    return torch.cat(parts, dim=1)


def _final_norm(te):
    te = getattr(te, "module", te)  # unwrap DistributedDataParallel
    inner = getattr(te, "text_model", te)
    return inner.final_layer_norm


def encode_prompts(base, captions: list[str], *, max_token_length: int = 75, clip_skip: int = 1, device=None):
    """Returns ``(hidden_states [B, L, D], pooled [B, D] or None)``."""
    device = device or next(base.unet.parameters()).device
    if base.family == "sdxl":
        hs, pooled = [], None
        for k, (tok, te) in enumerate(zip(base.tokenizers, base.text_encoders)):
            dev = next(te.parameters()).device
            per_chunk = []
            for j, ids in enumerate(_chunks(tok, captions, max_token_length)):
                out = te(ids.to(dev), output_hidden_states=True)
                per_chunk.append(out.hidden_states[-2])
                if k == 1 and j == 0:
                    pooled = out.text_embeds if hasattr(out, "text_embeds") else out[0]
            hs.append(_join(per_chunk).to(device))
        return torch.cat(hs, dim=-1), pooled.to(device)
    tok, te = base.tokenizers[0], base.text_encoders[0]
    dev = next(te.parameters()).device
    per_chunk = []
    for ids in _chunks(tok, captions, max_token_length):
        if clip_skip > 1:
            out = te(ids.to(dev), output_hidden_states=True)
            per_chunk.append(_final_norm(te)(out.hidden_states[-clip_skip]))
        else:
            per_chunk.append(te(ids.to(dev)).last_hidden_state)
    return _join(per_chunk).to(device), None
