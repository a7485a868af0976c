"""The shared attention decoder (attention.py: how to look; recurrent.py: how to write)."""
from mmdesc.decoder.attention import ATTENTIONS, DotAttention, MLPAttention, masked_softmax
from mmdesc.decoder.recurrent import Decoder, PreparedContext, doubly_stochastic_penalty

__all__ = ["ATTENTIONS", "Decoder", "DotAttention", "MLPAttention", "PreparedContext",
           "doubly_stochastic_penalty", "masked_softmax"]
