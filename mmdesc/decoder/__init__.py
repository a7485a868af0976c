"""The shared attention decoder (attention.py: how to look; recurrent.py: how to write)."""
from mmdesc.decoder.attention import (ATTENTIONS, CoverageAttention, DotAttention, LocationAttention, MLPAttention,
                                      masked_softmax)
from mmdesc.decoder.recurrent import Decoder, PreparedContext

__all__ = ["ATTENTIONS", "CoverageAttention", "Decoder", "DotAttention", "LocationAttention", "MLPAttention",
           "PreparedContext", "masked_softmax"]
