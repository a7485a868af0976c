"""Reduced precision (``--precision bf16|int8``, ``search.precision``): the conversions really
happen, captions agree with float32, bad settings are one clear line; and the attention
score computed in blocks equals the score computed at once."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from conftest import RECIPES, ROOT, mmdesc

needs_bf16 = pytest.mark.skipif(not __import__("mmdesc.precision").precision.cpu_has_bf16(),
                                reason="this CPU has no bfloat16 arithmetic (AVX-512 BF16 or AMX)")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


# ------------------------------------------------------------------ a small model that knows its captions

@pytest.fixture(scope="module")
def memorised(tiny_data, tmp_path_factory):
    """The tiny image recipe's model, fitted to the captions of 16 training images until it is sure
    of them (a few seconds), saved as a checkpoint; and those images."""
    from mmdesc import build, checkpoint
    from mmdesc.config import load_recipe
    from mmdesc.data import target_tensors

    torch.manual_seed(5)
    recipe = load_recipe(RECIPES / "tiny" / "image.yaml", [f"data.root={tiny_data}"])
    examples = build.read_split(recipe, "train")[:16]
    reader = build.build_reader(recipe)
    reader.fit(examples)
    tokenizer = build.build_tokenizer(recipe, build.read_split(recipe, "train"))
    model = build.build_model(recipe, reader, tokenizer, pretrained=False)
    batch = reader.collate([reader.load(ex.source) for ex in examples])
    inputs, outputs = target_tensors([tokenizer.encode(ex.references[0]) for ex in examples])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        logits, _, _ = model(batch, inputs)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), outputs.flatten(), ignore_index=0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    path = checkpoint.save(tmp_path_factory.mktemp("memorised") / "best", model,
                           build.checkpoint_meta(recipe, reader, tokenizer))
    return path, [ex.source for ex in examples]


def captions(run, files, *options) -> list[str]:
    r = mmdesc("describe", *files, "-c", run, *options)
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert len(lines) == len(files)
    return [line.split("\t", 1)[1] for line in lines]


@pytest.mark.parametrize("precision", [pytest.param("bf16", marks=needs_bf16), "int8"])
def test_reduced_precision_captions_agree_with_float32(memorised, precision):
    run, files = memorised
    exact = captions(run, files, "--precision", "fp32")
    assert len(set(exact)) >= 8, "the model should tell its images apart"
    reduced = captions(run, files, "--precision", precision)
    same = sum(a == b for a, b in zip(exact, reduced))
    assert same >= 0.75 * len(files), list(zip(exact, reduced))


def test_describe_int8_through_the_front_door(tiny_image_run, tiny_data):
    imgs = [tiny_data / "images" / f"test_{i:06d}.png" for i in range(3)]
    r = mmdesc("describe", *imgs, "-c", tiny_image_run, "--precision", "int8", "--json")
    assert r.code == 0, r.err
    records = json.loads(r.out)
    assert [rec["file"] for rec in records] == [str(p) for p in imgs]
    for rec in records:
        h = rec["hypotheses"][0]
        assert h["text"].strip() and len(h["attention"]) == len(h["words"])
        sums = [sum(row) for row in h["attention"]]  # a word no piece maps to has a row of zeros
        assert any(abs(t - 1) < 1e-2 for t in sums) and all(abs(t - 1) < 1e-2 or t == 0 for t in sums)


def test_a_bad_precision_is_one_clear_error(tiny_image_run, tiny_data):
    r = mmdesc("describe", tiny_data / "images" / "test_000000.png", "-c", tiny_image_run, "--precision", "fp16")
    assert r.code == 2 and not r.out
    assert len(r.err.strip().splitlines()) == 1
    assert "fp16" in r.err and "bf16" in r.err and "int8" in r.err


def test_bf16_on_a_cpu_without_it_is_one_clear_error(tiny_image_run, tiny_data, monkeypatch):
    from mmdesc import precision

    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)  # as on a CPU without AVX-512 BF16
    r = mmdesc("describe", tiny_data / "images" / "test_000000.png", "-c", tiny_image_run, "--precision", "bf16")
    assert r.code != 0 and not r.out
    assert r.err.strip().splitlines() == ["error: precision bf16: this CPU has no bfloat16 arithmetic "
                                          "(AVX-512 BF16 or AMX); use int8 or fp32"]


def test_unsupported_devices_are_named():
    from mmdesc.precision import problem

    assert problem("int8", "cuda") == ("precision int8: dynamic int8 layers run on the CPU only, not cuda "
                                       "(use bf16 there)")
    assert problem("bf16", "mps").startswith("precision bf16: runs on cpu or cuda")
    assert problem("fp32", "mps") is None and problem("int8", "cpu") is None


def test_recipe_precision_is_checked_and_used(tiny_data):
    from mmdesc.config import load_recipe
    from mmdesc.errors import ConfigError

    recipe = load_recipe(RECIPES / "tiny" / "image.yaml", ["search.precision=int8"])
    assert recipe.search.precision == "int8"
    with pytest.raises(ConfigError, match="search.precision"):
        load_recipe(RECIPES / "tiny" / "image.yaml", ["search.precision=fp16"])


# ------------------------------------------------------------------ the conversions really happen

def text_model():
    """The tiny translation recipe's model with random weights: a GRU encoder and a GRU decoder."""
    import random

    from mmdesc import build
    from mmdesc.config import load_recipe
    from mmdesc.corpora import Example
    from mmdesc.corpora.synth import captions as scene_captions, sample_scene

    recipe = load_recipe(RECIPES / "tiny" / "translate.yaml")
    rng = random.Random(0)
    lines = [c for _ in range(30) for c in scene_captions(sample_scene(rng, 64))]
    examples = [Example(str(i), line, [line]) for i, line in enumerate(lines)]
    reader = build.build_reader(recipe)
    reader.fit(examples)
    tokenizer = build.build_tokenizer(recipe, examples)
    model = build.build_model(recipe, reader, tokenizer, pretrained=False).eval()
    return build.Trained(model, reader, tokenizer, recipe, {}, ROOT), lines[:6]


def test_int8_quantizes_encoder_decoder_projection_and_recurrences():
    from mmdesc.precision import convert, quantized_layers

    trained, _ = text_model()
    names = set(quantized_layers(convert(trained.model, "int8")))
    assert {"encoder.rnn", "decoder.proj", "decoder.w_e", "decoder.w_c2", "decoder.att.key", "decoder.att.query",
            "decoder.hidden_layers.w_hh", "decoder.hidden_layers.w_hh2"} <= names
    assert "decoder.att.score" not in names  # read as a tensor: stays float
    assert type(trained.model.decoder.proj).__name__ == "Linear" and \
        type(trained.model.decoder.proj).__module__.startswith("torch.ao.nn.quantized.dynamic")


@needs_bf16
def test_bf16_runs_in_bfloat16_and_scores_in_float32():
    from mmdesc.data import to_device
    from mmdesc.precision import convert

    trained, lines = text_model()
    model = convert(trained.model, "bf16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    batch = to_device(trained.reader.collate([trained.reader.load(s) for s in lines]), "cpu")
    with torch.inference_mode():
        ctx = model.encode(batch)
        pctx = model.decoder.prepare(ctx)
        state = model.decoder.init_state(pctx, 3)
        logprobs, state, alpha = model.decoder.step(pctx, torch.ones(len(lines), 3, dtype=torch.long), state)
    assert ctx.vectors.dtype == torch.bfloat16 and state["h"].dtype == torch.bfloat16
    assert logprobs.dtype == torch.float32 and alpha.dtype == torch.float32
    torch.testing.assert_close(alpha.sum(-1), torch.ones(len(lines), 3))


def test_a_converted_model_is_not_converted_again():
    from mmdesc.errors import MmdescError
    from mmdesc.precision import convert

    trained, _ = text_model()
    convert(trained.model, "int8")
    assert convert(trained.model, "int8").precision == "int8"
    with pytest.raises(MmdescError, match="already int8"):
        convert(trained.model, "bf16")


def test_int8_step_stays_close_to_float32():
    """One decode step of the same weights: int8 log-probabilities near the float32 ones."""
    import copy

    from mmdesc.data import to_device
    from mmdesc.precision import convert

    trained, lines = text_model()
    batch = to_device(trained.reader.collate([trained.reader.load(s) for s in lines]), "cpu")
    out = []
    for model in (trained.model, convert(copy.deepcopy(trained.model), "int8")):
        with torch.inference_mode():
            pctx = model.decoder.prepare(model.encode(batch))
            state = model.decoder.init_state(pctx, 2)
            out.append(model.decoder.step(pctx, torch.full((len(lines), 2), 5), state))
    (lp0, s0, a0), (lp1, s1, a1) = out
    assert (lp1 - lp0).abs().max() < 0.05 and (a1 - a0).abs().max() < 0.02
    assert not torch.equal(lp0, lp1)  # it did run another arithmetic


# ------------------------------------------------------------------ the attention score in blocks

def reference_score(keys, q, v, loc=None, w=None):
    x = keys[:, None, :, :].double() + q[:, :, None, :].double()  # (B, K, N, A)
    if loc is not None:
        x = x + loc.transpose(2, 3).double() @ w.t().double()  # (B, K, N, C) @ (C, A)
    return (x.tanh() @ v.double()[:, None]).squeeze(-1)  # (B, K, N)


@pytest.mark.parametrize("block", [7, 60, 1000, 1 << 20])
def test_blocked_score_equals_the_whole_one_values_and_gradients(monkeypatch, block):
    from mmdesc.decoder import attention

    monkeypatch.setattr(attention, "SCORE_BLOCK", block)  # 7: one position per block; 1 << 20: one block
    torch.manual_seed(0)
    keys = torch.randn(3, 11, 5, requires_grad=True)
    q = torch.randn(3, 4, 5, requires_grad=True)
    v = torch.randn(5, requires_grad=True)
    loc, w = torch.randn(3, 4, 2, 11, requires_grad=True), torch.randn(5, 2, requires_grad=True)
    for extra in ((), (loc, w)):
        got = attention.additive_score(keys, q, v, *extra)
        want = reference_score(keys, q, v, *extra)
        torch.testing.assert_close(got.double(), want, atol=2e-6, rtol=1e-5)
        grads = torch.autograd.grad(got.sum(), (keys, q, v) + extra)
        wants = torch.autograd.grad(want.sum(), (keys, q, v) + extra)
        for g, h in zip(grads, wants):
            torch.testing.assert_close(g.double(), h.double(), atol=1e-5, rtol=1e-4)


def test_bf16_inputs_are_scored_in_float32():
    from mmdesc.decoder.attention import additive_score

    torch.manual_seed(1)
    keys, q, v = torch.randn(2, 9, 6), torch.randn(2, 3, 6), torch.randn(6)
    got = additive_score(keys.bfloat16(), q.bfloat16(), v.bfloat16())
    assert got.dtype == torch.float32
    want = reference_score(keys.bfloat16().float(), q.bfloat16().float(), v.bfloat16().float())
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------ the bench and the GPU path

def test_decode_bench_sweeps_precisions_and_positions():
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "decode.py"), "--quick", "--threads", "1",
                        "--configs", "classic", "--no-sequential", "--beams", "3", "--precision", "fp32", "int8",
                        "--positions", "8", "40"], capture_output=True, text=True, timeout=120, cwd=ROOT,
                       env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    records = [json.loads(line) for line in r.stdout.splitlines()]
    assert all({"precision", "positions"} <= rec.keys() for rec in records)
    steps = {(rec["precision"], rec["positions"]) for rec in records if rec["what"] == "step_ms"}
    assert steps == {("fp32", 8), ("fp32", 40), ("int8", 8), ("int8", 40)}
    assert {rec["what"] for rec in records} >= {"captions_per_s", "attention_ms", "attention_share", "peak_rss"}


@needs_cuda
def test_cuda_graphs_and_bf16_give_the_eager_captions():
    """On a GPU: the decode step replayed as CUDA graphs gives the eager search's hypotheses,
    and bf16 search runs there."""
    from mmdesc.contexts import ContextSet
    from mmdesc.decoder import Decoder
    from mmdesc.graphs import capture_steps
    from mmdesc.precision import convert
    from mmdesc.search import decode

    torch.manual_seed(0)
    dec = Decoder(50, 12, cell="lstm", emb=8, hidden=16, att=10, out=8, dropout=0.0).cuda().eval()
    ctx = ContextSet(torch.randn(3, 7, 12, device="cuda"), ContextSet.full_mask(3, 7, "cuda"), [None] * 3)
    kw = dict(beam=3, max_lens=6, min_len=6, length_penalty=0.0)
    eager = decode(dec, ctx, **kw)
    capture_steps(dec, True)
    graphed = decode(dec, ctx, **kw)
    assert dec.graphs.graphs, "no step was recorded as a CUDA graph"
    assert [[h.tokens for h in hs] for hs in graphed] == [[h.tokens for h in hs] for hs in eager]
    for hs, gs in zip(eager, graphed):
        torch.testing.assert_close(gs[0].alpha, hs[0].alpha)
    capture_steps(dec, False)
    convert(dec, "bf16")
    bf = decode(dec, ContextSet(ctx.vectors.bfloat16(), ctx.mask, ctx.layouts), **kw)
    assert len(bf) == 3 and all(len(h[0].tokens) == 6 for h in bf)
