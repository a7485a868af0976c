"""Adding a modality is one module: a modality defined here, registered, then trained,
evaluated and described through the real CLI with no change to any other module."""
from __future__ import annotations

import random
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import mmdesc
from mmdesc.contexts import ContextSet, TimeLayout
from mmdesc.corpora import Example
from mmdesc.errors import MediaError

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def make_module() -> types.ModuleType:
    """'digits': a .dig file holds digits, one per 0.1 s; its description spells them."""
    m = types.ModuleType("toy_digits_modality")
    m.SUFFIXES = (".dig",)

    @dataclass(frozen=True)
    class ReaderConfig:
        max_len: int = 20

    @dataclass(frozen=True)
    class EncoderConfig:
        dim: int = 16

    @dataclass(frozen=True)
    class SplitConfig:
        list: str

    class Reader:
        def __init__(self, max_len: int = 20):
            self.max_len = max_len

        def fit(self, examples):
            pass

        def state(self):
            return {}

        def load_state(self, state):
            pass

        def encoder_kwargs(self):
            return {}

        def length(self, item):
            return len(item)

        def probe(self, source):
            if not Path(source).is_file() or Path(source).stat().st_size == 0:
                raise MediaError(source, "no digits")
            return Path(source).stat().st_size

        def load(self, source):
            try:
                text = Path(source).read_text().strip()
            except (OSError, UnicodeDecodeError) as e:
                raise MediaError(source, f"cannot read ({e})") from None
            if not text or not text.isdigit():
                raise MediaError(source, "not a digit file")
            return [int(c) for c in text[: self.max_len]]

        def collate(self, items):
            n = max(len(it) for it in items)
            ids = torch.full((len(items), n), 10)
            for b, it in enumerate(items):
                ids[b, : len(it)] = torch.tensor(it)
            return {"ids": ids, "lengths": torch.tensor([len(it) for it in items])}

    class Encoder(nn.Module):
        def __init__(self, dim: int = 16):
            super().__init__()
            self.out_dim = dim
            self.embed = nn.Embedding(11, dim)
            self.rnn = nn.GRU(dim, dim // 2, batch_first=True, bidirectional=True)

        def forward(self, batch):
            v, _ = self.rnn(self.embed(batch["ids"]))  # (B, N) -> (B, N, D)
            n = batch["ids"].shape[1]
            mask = torch.arange(n)[None, :] < batch["lengths"][:, None]  # (B, N)
            layouts = [TimeLayout(tuple((i / 10, (i + 1) / 10) for i in range(k)), k / 10)
                       for k in batch["lengths"].tolist()]
            return ContextSet(v, mask, layouts)

    def read_split(split, root):
        out = []
        for line in (Path(root) / split.list).read_text().splitlines():
            name, caption, spans = line.split("\t")
            words = caption.split()
            regions = {}
            for w, span in zip(words, spans.split(";")):
                regions.setdefault(w, []).append([float(x) for x in span.split(",")])
            out.append(Example(name, str(Path(root) / name), [caption], {"regions": regions}))
        return out

    def synthesize(root, train, valid, test, seed):
        from mmdesc.corpora import synth

        root = Path(root)
        synth.start_part(root, "digits")
        for split, n in (("train", train), ("valid", valid), ("test", test)):
            rng, lines, entries = random.Random(f"{seed}:{split}"), [], {}
            for k in range(n):
                digits = [rng.randrange(10) for _ in range(rng.randint(2, 5))]
                name = f"digits/{synth.scene_id(split, k)}.dig"
                (root / name).parent.mkdir(parents=True, exist_ok=True)
                (root / name).write_text("".join(map(str, digits)))
                caption = " ".join(WORDS[d] for d in digits)
                spans = ";".join(f"{i / 10},{(i + 1) / 10}" for i in range(len(digits)))
                lines.append(f"{name}\t{caption}\t{spans}")
                entries[synth.scene_id(split, k)] = {"file": name, "caption": caption}
            (root / f"digits_{split}.tsv").write_text("\n".join(lines) + "\n")
            synth.add_to_manifest(root, split, "digits", entries)
        synth.mark_complete(root, "digits", {"seed": seed})

    def bench_inputs(root, n):
        paths = []
        for k in range(n):
            (Path(root) / f"{k}.dig").write_text(str(k % 10) * 3)
            paths.append(str(Path(root) / f"{k}.dig"))
        return paths

    for name, obj in dict(ReaderConfig=ReaderConfig, EncoderConfig=EncoderConfig, SplitConfig=SplitConfig,
                          Reader=Reader, Encoder=Encoder, read_split=read_split, synthesize=synthesize,
                          bench_inputs=bench_inputs).items():
        setattr(m, name, obj)
    return m


@pytest.fixture
def digits(monkeypatch):
    from mmdesc import modalities

    module = make_module()
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(modalities._MODULES, "digits", module.__name__)
    return module


RECIPE = """
modality: digits
out: {out}
seed: 1
data:
  root: {root}
  synth: {{train: 300, valid: 10, test: 10, seed: 2}}
  train: {{list: digits_train.tsv}}
  valid: {{list: digits_valid.tsv}}
  test: {{list: digits_test.tsv}}
encoder: {{dim: 24}}
tokenizer: {{kind: word}}
decoder: {{attention: location, emb: 16, hidden: 32, att: 16, out: 16, location_channels: 3, location_kernel: 3}}
loss: {{ctc: 0.3}}
search: {{beam: 3, max_len: 8, batch_size: 16}}
train: {{batch_size: 16, lr: 1.0e-2, warmup: 5, max_steps: 120, valid_every: 60, valid_size: 10, save_every: 60,
         log_every: 20, metric: wer}}
"""


def test_a_modality_defined_in_a_test_trains_evaluates_and_describes(digits, tmp_path):
    recipe = tmp_path / "digits.yaml"
    recipe.write_text(RECIPE.format(out=tmp_path / "run", root=tmp_path / "data"))
    r = mmdesc("train", recipe)
    assert r.code == 0, r.err
    assert (tmp_path / "data" / ".complete-digits").exists()
    rows = [line for line in (tmp_path / "data" / "scenes_test.jsonl").read_text().splitlines() if line]
    assert len(rows) == 10 and '"digits"' in rows[0]
    log = (tmp_path / "run" / "metrics.jsonl").read_text()
    assert '"ctc"' in log and '"xent"' in log  # every term of the objective is logged

    r = mmdesc("evaluate", "--checkpoint", tmp_path / "run", "--json")
    assert r.code == 0, r.err
    import json

    scores = json.loads(r.out)
    assert scores["n"] == 10 and scores["wer"] < 60 and "grounding" in scores

    (tmp_path / "in.dig").write_text("2741")
    (tmp_path / "bad.dig").write_text("not digits")
    r = mmdesc("describe", tmp_path / "in.dig", tmp_path / "bad.dig", "-c", tmp_path / "run",
               "--attention", tmp_path / "att")
    assert r.code == 2
    line = r.out.strip()
    assert line.startswith(f"{tmp_path / 'in.dig'}\t") and len(line.split("\t")[1].split()) >= 3
    assert "bad.dig: not a digit file" in r.err
    assert (tmp_path / "att" / "in.png").is_file()
