"""The decoder's step replayed as CUDA graphs, so that one input at a time is not bound by
kernel launches.

A decode step is some fifty small kernels (embedding, a dozen matrix products, the
attention's blocks, the recurrence, log-softmax); at one input (5 beams) each runs for
microseconds on a GPU and the step is bound by launching them one by one from Python.
``StepGraphs`` records the step once per shape of its inputs (inputs x beams x positions,
and the state's entries) as a CUDA graph and replays it: the inputs are copied into the
graph's own tensors (the context only when it changed), the outputs are copied out, since
the search keeps and changes them. Beam search at one input needs two graphs (the first
step has one beam); a batch whose inputs finish one by one needs one per batch size, up
to ``MAX_GRAPHS``, beyond which steps run eagerly.

Turned on by ``search.compile`` (``--compile``) on a CUDA device (``capture_steps``); on a
CPU it does nothing. If recording fails, it warns once and the step runs eagerly.
"""
from __future__ import annotations

import warnings

from mmdesc.errors import MmdescWarning

MAX_GRAPHS = 64


def capture_steps(decoder, enabled: bool) -> None:
    """Replay ``decoder.step`` as CUDA graphs when ``enabled`` and the decoder is on a CUDA device;
    otherwise (and when not enabled) run it eagerly."""
    device = next(decoder.parameters()).device
    decoder.graphs = StepGraphs(decoder) if enabled and device.type == "cuda" else None


def signature(pctx, y, state) -> tuple:
    """What a recorded graph is specific to: every input's shape and dtype."""
    tensors = [pctx.vectors, pctx.mask, pctx.keys, y] + [state[k] for k in sorted(state)]
    return tuple(sorted(state)) + tuple((tuple(t.shape), t.dtype) for t in tensors)


class StepGraphs:
    """``decoder.step`` as CUDA graphs, one per input signature (at most ``limit``)."""

    def __init__(self, decoder, limit: int = MAX_GRAPHS):
        self.decoder, self.limit = decoder, limit
        self.graphs: dict[tuple, StepGraph] = {}
        self.failed = False

    def __call__(self, pctx, y, state):
        key = signature(pctx, y, state)
        graph = self.graphs.get(key)
        if graph is None:
            if self.failed or len(self.graphs) >= self.limit or not y.is_cuda:
                return self.decoder.eager_step(pctx, y, state)
            try:
                graph = self.graphs[key] = StepGraph(self.decoder, pctx, y, state)
            except RuntimeError as err:
                self.failed = True
                reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
                warnings.warn(f"cannot record the decode step as a CUDA graph, running it eagerly: {reason}",
                              MmdescWarning, stacklevel=2)
                return self.decoder.eager_step(pctx, y, state)
        return graph.replay(pctx, y, state)


class StepGraph:
    """One recorded step: its own input tensors, the graph, its output tensors."""

    def __init__(self, decoder, pctx, y, state):
        import torch

        from mmdesc.decoder.recurrent import PreparedContext

        self.pctx = PreparedContext(pctx.vectors.clone(), pctx.mask.clone(), pctx.keys.clone())
        self.source = (pctx.vectors, pctx.mask, pctx.keys)  # held, so their memory is not reused
        self.y = y.clone()
        self.state = {k: v.clone() for k, v in state.items()}
        with torch.cuda.device(y.device):
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up off the capture: workspaces, lazy inits, compiling
                for _ in range(2):
                    decoder.eager_step(self.pctx, self.y, self.state)
            torch.cuda.current_stream().wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.out = decoder.eager_step(self.pctx, self.y, self.state)

    def replay(self, pctx, y, state):
        if any(a is not b for a, b in zip((pctx.vectors, pctx.mask, pctx.keys), self.source)):
            self.pctx.vectors.copy_(pctx.vectors)
            self.pctx.mask.copy_(pctx.mask)
            self.pctx.keys.copy_(pctx.keys)
            self.source = (pctx.vectors, pctx.mask, pctx.keys)
        self.y.copy_(y)
        for k, v in state.items():
            self.state[k].copy_(v)
        self.graph.replay()
        logprobs, new_state, alpha = self.out
        return logprobs.clone(), {k: v.clone() for k, v in new_state.items()}, alpha.clone()
