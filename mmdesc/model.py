"""Describer = a modality's encoder + the shared attention decoder."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from mmdesc.contexts import ContextSet
from mmdesc.search import Hypothesis, decode, output_limits


class Describer(nn.Module):
    """Encodes a batch into a ContextSet and writes sentences with the decoder.

    ``ctc_vocab``: also a linear CTC head over the context vectors (for ``loss.ctc``), whose
    blank is the padding id."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, ctc_vocab: int = 0):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.ctc_head = nn.Linear(encoder.out_dim, ctc_vocab) if ctc_vocab else None

    def encode(self, batch: dict) -> ContextSet:
        if "features" in batch:  # cached output of the encoder's frozen part (mmdesc/features.py): the rest
            return self.encoder.head(ContextSet(batch["features"], batch["features_mask"], batch["layouts"]))
        return self.encoder(batch)

    def forward(self, batch: dict, inputs: Tensor, positions: bool = False):
        """Teacher forcing: inputs (B, T) = BOS + target[:-1] -> logits (B, T, V), alphas (B, T, N), ctx;
        ``positions=True``: and the positions (B, T) hard attention drew, or None (Decoder.forward)."""
        ctx = self.encode(batch)
        if positions:
            logits, alphas, drawn = self.decoder(ctx, inputs, positions=True)
            return logits, alphas, ctx, drawn
        logits, alphas = self.decoder(ctx, inputs)
        return logits, alphas, ctx

    @torch.inference_mode()
    def generate(self, batch: dict, *, beam: int = 5, n_best: int = 1, max_len: int = 50,
                 max_len_a: float = 0.0, max_len_b: int = 0, min_len: int = 0,
                 length_penalty: float = 1.0, max_attention_shift: int = 0, attention: bool = True,
                 attend: str = "expectation", bos: int = 1, eos: int = 2, no_repeat_ngram: int = 0,
                 repetition_penalty: float = 1.0, sample: bool = False, temperature: float = 1.0, top_k: int = 0,
                 top_p: float = 1.0, seed: int = 0,
                 generator: torch.Generator | None = None) -> tuple[list[list[Hypothesis]], list]:
        """n-best hypotheses per input, best first, with their attention (``attention=False``:
        without, and cheaper); and each input's layout. ``attend``: the context the decoder
        reads, the attention's expectation or the vector at its peak ("argmax"). The other search
        options are ``decode``'s."""
        self.decoder.set_attend(attend)
        ctx = self.encode(batch)
        limits = output_limits(ctx.lengths, max_len, max_len_a, max_len_b)
        hyps = decode(self.decoder, ctx, beam=beam, n_best=n_best, max_lens=limits, min_len=min_len,
                      length_penalty=length_penalty, max_attention_shift=max_attention_shift,
                      attention=attention, bos=bos, eos=eos, no_repeat_ngram=no_repeat_ngram,
                      repetition_penalty=repetition_penalty, sample=sample, temperature=temperature,
                      top_k=top_k, top_p=top_p, seed=seed, generator=generator)
        return hyps, ctx.layouts
