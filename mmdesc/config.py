"""Recipes: YAML -> ``key=value`` overrides -> typed, frozen dataclasses.

    recipe = load_recipe("recipes/image.yaml", ["decoder.hidden=512", "train.lr=3e-4"])

Every problem (unknown key, wrong type, value out of range) is collected with its dotted
path and raised at once as one ``ConfigError``. The sections that belong to a modality
(``input:``, ``encoder:``, ``data.train/valid/test:``) take their dataclasses from the
module that ``modality:`` names in ``MODALITIES``. ``recipe_to_dict``/``recipe_from_dict``
round-trip a recipe through JSON-able data, to save it inside checkpoints.

A config dataclass (a modality's too) may define ``problems(self) -> list[str]``: cheap
sanity checks, each message starting with the field name; the section path is prefixed.
Every number has a range (``check_range``; any float must be finite), so a recipe, or the
recipe inside a checkpoint from elsewhere, cannot ask for a model or a batch that does
not fit in memory. YAML is read with bounds (file size, nesting depth, the size after
aliases are expanded), so an alias bomb is refused in milliseconds; messages show values
shortened (``_show``), never whole. ``load_recipe(..., training=True)`` also checks what a
training needs from this machine (a writable run folder, a device that exists), in the
same one error. Nothing here imports torch (the device check imports it when asked).
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import math
import os
import re
import stat
import tempfile
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from mmdesc import devices
from mmdesc.errors import ConfigError
from mmdesc.modalities import MODALITIES


class ReaderSlot:
    """Stands for the modality's ``ReaderConfig``; swapped in when a recipe is parsed."""


class EncoderSlot:
    """Stands for the modality's ``EncoderConfig``; swapped in when a recipe is parsed."""


class SplitSlot:
    """Stands for the modality's ``SplitConfig``; swapped in when a recipe is parsed."""


# Upper limits of the numbers a recipe may hold: far above any model this toolkit trains, far
# below what would exhaust memory before a single step (the reason they exist).
MAX_DIM = 16384  # any layer width (embedding, hidden, attention, channels)
MAX_VOCAB = 1_000_000
MAX_BATCH = 65536
MAX_BEAM = 256
MAX_OUTPUT = 10_000  # tokens of one output
MAX_STEPS = 10 ** 9
MAX_SEED = 2 ** 32 - 1
MAX_SCENES = 10 ** 7  # synthetic corpus split sizes
MAX_INT = 2 ** 53  # any integer at all
MAX_RECIPE_BYTES = 1 << 20
MAX_YAML_DEPTH = 32
MAX_YAML_NODES = 10_000  # after aliases are expanded


def check_range(cfg: object, lo: float, hi: float, *names: str) -> list[str]:
    """A problem for each field of ``cfg`` named in ``names`` outside [lo, hi]."""
    return [f"{n}: must be in [{lo}, {hi}], got {_show(getattr(cfg, n))}" for n in names
            if not lo <= getattr(cfg, n) <= hi]


def _positive(cfg: object, *names: str) -> list[str]:
    return [f"{n}: must be > 0, got {getattr(cfg, n)}" for n in names if not getattr(cfg, n) > 0]


def _non_negative(cfg: object, *names: str) -> list[str]:
    return [f"{n}: must be >= 0, got {getattr(cfg, n)}" for n in names if not getattr(cfg, n) >= 0]


def _fraction(cfg: object, *names: str) -> list[str]:
    return [f"{n}: must be in [0, 1), got {getattr(cfg, n)}" for n in names if not 0 <= getattr(cfg, n) < 1]


@dataclass(frozen=True)
class SynthConfig:
    """Generate the synthetic corpus under ``data.root`` when it is missing."""

    train: int = 6000
    valid: int = 300
    test: int = 500
    seed: int = 1
    shift: int = 0  # > 0: also a test_shift split drawn outside the training ranges (where a modality has one)

    def problems(self) -> list[str]:
        found = _positive(self, "train", "valid") + _non_negative(self, "test")
        return found + check_range(self, 0, MAX_SCENES, "train", "valid", "test", "shift") + \
            check_range(self, 0, MAX_SEED, "seed")


@dataclass(frozen=True, kw_only=True)  # kw_only: required splits follow defaulted fields
class DataConfig:
    root: str = "data/synth"  # relative split paths resolve against this
    synth: SynthConfig | None = None  # null/absent = never generate
    train: SplitSlot
    valid: SplitSlot
    test: SplitSlot | None = None
    test_shift: SplitSlot | None = None  # a test split drawn outside the training ranges (data synth --shift)
    max_target_words: int = 60  # longer training targets are truncated

    def problems(self) -> list[str]:
        return _positive(self, "max_target_words") + check_range(self, 1, MAX_OUTPUT, "max_target_words")


@dataclass(frozen=True)
class TokenizerConfig:
    kind: Literal["sentencepiece", "word"] = "sentencepiece"
    vocab_size: int = 1000
    model_type: Literal["unigram", "bpe"] = "unigram"

    def problems(self) -> list[str]:
        return check_range(self, 5, MAX_VOCAB, "vocab_size")  # more than the 4 special tokens


# metadata of a config field that is not a constructor argument of the class its section builds:
# build.py applies it (the transfer settings, mmdesc/transfer.py) and leaves it out of the call
NOT_AN_ARGUMENT = {"arg": False}


def constructor_args(cfg: object) -> dict:
    """The fields of a config dataclass that are constructor arguments (``asdict`` less the
    ``NOT_AN_ARGUMENT`` ones), as plain values."""
    skip = {f.name for f in dataclasses.fields(cfg) if not f.metadata.get("arg", True)}
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in skip}


@dataclass(frozen=True, kw_only=True)
class EncoderTransfer:
    """What every modality's encoder section takes besides its own keys (its ``EncoderConfig``
    extends this class): where the encoder's weights start and when a frozen backbone trains.
    build.py applies these (mmdesc/transfer.py); they are not arguments of the Encoder.

    ``init_from``: a checkpoint (or run folder) of another mmdesc model of the same modality;
    this encoder starts from its encoder's weights (every shape the same) and its reader state.
    ``unfreeze_at`` > 0: the backbone stages ``finetune`` froze train from that step on (their
    BatchNorm statistics stay as they were). ``backbone_lr`` > 0: the backbone's own learning
    rate (else ``train.lr``), under the same schedule."""

    init_from: str = field(default="", metadata=NOT_AN_ARGUMENT)
    unfreeze_at: int = field(default=0, metadata=NOT_AN_ARGUMENT)
    backbone_lr: float = field(default=0.0, metadata=NOT_AN_ARGUMENT)

    def problems(self) -> list[str]:
        found = check_range(self, 0, MAX_STEPS, "unfreeze_at") + check_range(self, 0, 10, "backbone_lr")
        finetune = getattr(self, "finetune", None)
        if self.unfreeze_at and finetune not in ("none", "top"):
            found.append(f"unfreeze_at: needs a backbone that starts frozen (finetune: none or top), "
                         f"{'got finetune: ' + _show(finetune) if finetune else 'and this encoder has no finetune'}")
        return found


@dataclass(frozen=True)
class DecoderConfig:
    cell: Literal["gru", "lstm"] = "gru"
    attention: Literal["mlp", "dot", "location", "coverage"] = "mlp"  # location: Chorowski et al. 2015;
    # coverage: the sum of the earlier steps' attention feeds the score (Tu et al. 2016)
    emb: int = 128
    hidden: int = 256
    att: int = 128
    out: int = 128  # deep-output size
    dropout: float = 0.1
    tied: bool = False  # tie output projection to embeddings (needs out == emb)
    gate: bool = False  # Show-Attend-Tell gating scalar beta
    init: Literal["mean", "zero"] = "mean"
    location_channels: int = 8  # location attention: filters over the previous alignment
    location_kernel: int = 15  # location attention: their width in positions (odd)
    # transfer (mmdesc/transfer.py): a checkpoint of another mmdesc model whose decoder (and
    # tokenizer) this one starts from; word vectors in word2vec/GloVe text format for the embeddings
    init_from: str = field(default="", metadata=NOT_AN_ARGUMENT)
    embeddings: str = field(default="", metadata=NOT_AN_ARGUMENT)
    attention_mode: Literal["soft", "hard"] = "soft"  # hard: Show-Attend-Tell's sampled attention (REINFORCE)
    hard_mix: float = 0.0  # hard: share of sequences trained on the expectation instead (SAT: 0.5)
    # hard: the REINFORCE baseline the decoder keeps: one moving average of the reward per vocabulary
    # token (token: "a" is easier to predict than "hexagon"), or one for all (scalar, SAT's)
    hard_baseline: Literal["scalar", "token"] = "token"

    def problems(self) -> list[str]:
        found = _positive(self, "emb", "hidden", "att", "out", "location_channels", "location_kernel")
        found += check_range(self, 0.0, 1.0, "hard_mix")
        if self.init_from and self.embeddings:
            found.append("embeddings: decoder.init_from gives the decoder its embeddings already; set one of the two")
        found += _fraction(self, "dropout") + check_range(self, 1, MAX_DIM, "emb", "hidden", "att", "out")
        found += check_range(self, 1, 1024, "location_channels", "location_kernel")
        if self.tied and self.out != self.emb:
            found.append(f"tied: needs out == emb, got out={self.out}, emb={self.emb}")
        if self.location_kernel % 2 == 0:
            found.append(f"location_kernel: must be odd, got {self.location_kernel}")
        return found


@dataclass(frozen=True)
class LossConfig:
    """The weights of the training objective's terms (mmdesc/objective.py)."""

    label_smoothing: float = 0.0  # of the cross-entropy
    ds_penalty: float = 0.0  # doubly-stochastic attention penalty
    ctc: float = 0.0  # joint CTC on the encoder output: total = (1 - ctc) * xent + ctc * CTC
    hard_reinforce: float = 1.0  # decoder.attention_mode: hard: weight of the REINFORCE term
    hard_entropy: float = 0.002  # hard: weight of the attention-entropy bonus
    hard_baseline_decay: float = 0.9  # hard: moving average of the reward: b = decay * b + (1 - decay) * r
    # hard: a draw's reward: the whole target's log-likelihood (sequence, SAT's) or the part from
    # its step on (to_go), discounted by hard_discount (0, the default: the draw's own word; the
    # image recipe's hard attention reaches test BLEU-4 89.1 in 30 minutes with it and the token
    # baseline, 77.7 with a scalar baseline; the whole reward-to-go, gamma = 1, levels off near 61)
    hard_reward: Literal["sequence", "to_go"] = "to_go"
    hard_discount: float = 0.0
    # supervised attention: -log(attention mass where the word is), from the corpus' ground truth
    attention_truth: float = 0.0

    def problems(self) -> list[str]:
        return _non_negative(self, "ds_penalty", "hard_reinforce", "hard_entropy", "attention_truth") + \
            _fraction(self, "label_smoothing", "ctc", "hard_baseline_decay") + \
            check_range(self, 0, 1, "hard_discount") + \
            check_range(self, 0, 1000, "hard_reinforce", "hard_entropy")


@dataclass(frozen=True)
class SearchConfig:
    beam: int = 5
    n_best: int = 1
    max_len: int = 50
    max_len_a: float = 0.0  # if > 0: limit = min(max_len, a * input_length + b)
    max_len_b: int = 10
    min_len: int = 0
    length_penalty: float = 1.0  # GNMT alpha; 0 = raw log-probability
    batch_size: int = 64
    compile: bool = False  # the fused attention score (Decoder.fuse_attention); on CUDA also the step as CUDA graphs
    attend: Literal["expectation", "argmax"] = "expectation"  # the context: attention's mean, or its peak's vector
    max_attention_shift: int = 0  # > 0: end a hypothesis whose attention peak jumps further than this
    no_repeat_ngram: int = 0  # > 0: never repeat an n-gram of this size within a hypothesis
    repetition_penalty: float = 1.0  # > 1: a token already said has its log-probability multiplied by it
    sample: bool = False  # draw n_best samples per input instead of searching (beam is not used)
    temperature: float = 1.0  # sampling only: < 1 sharper, > 1 flatter
    top_k: int = 0  # sampling only: draw among the k most likely tokens (0 = all)
    top_p: float = 1.0  # sampling only: draw within the smallest set of tokens whose probability reaches p
    seed: int = 0  # sampling only: the same seed, inputs and batch size give the same samples
    precision: Literal["fp32", "bf16", "int8"] = "fp32"  # arithmetic of the search (mmdesc.precision)

    def problems(self) -> list[str]:
        found = _positive(self, "beam", "n_best", "max_len", "batch_size", "repetition_penalty", "temperature",
                          "top_p")
        found += _non_negative(self, "max_len_a", "min_len", "length_penalty", "max_attention_shift",
                               "no_repeat_ngram", "top_k")
        found += check_range(self, 1, MAX_BEAM, "beam", "n_best") + check_range(self, 1, MAX_BATCH, "batch_size")
        found += check_range(self, 0, MAX_OUTPUT, "max_len", "min_len", "max_attention_shift", "no_repeat_ngram") + \
            check_range(self, -MAX_OUTPUT, MAX_OUTPUT, "max_len_b")
        found += check_range(self, 0, 100, "repetition_penalty", "temperature") + check_range(self, 0, 1, "top_p")
        found += check_range(self, 0, MAX_VOCAB, "top_k") + check_range(self, 0, MAX_SEED, "seed")
        if not self.sample:
            found += [f"{name}: only used when sampling (sample: true)" for name, off in
                      (("temperature", 1.0), ("top_k", 0), ("top_p", 1.0)) if getattr(self, name) != off]
        if self.n_best > self.beam and not self.sample:
            found.append(f"n_best: must be <= beam ({self.beam}), got {self.n_best}")
        if self.min_len > self.max_len:
            found.append(f"min_len: must be <= max_len ({self.max_len}), got {self.min_len}")
        return found


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    clip: float = 1.0
    warmup: int = 200
    schedule: Literal["cosine", "constant", "inverse_sqrt"] = "cosine"
    max_steps: int = 5000
    max_minutes: float = 0.0  # 0 = no time limit
    # what the schedule's decay runs over: steps (up to max_steps), or time (up to max_minutes,
    # or max_steps if that comes first): on a machine slower than the recipe expected, a run
    # stopped by its time limit still ends at the low learning rate instead of mid-schedule
    anneal: Literal["steps", "time"] = "steps"
    valid_every: int = 500
    valid_size: int = 300  # items of the valid split scored with beam search
    metric: str = "bleu"  # the validation score that picks best/ (metrics.SELECTION: name -> direction)
    patience: int = 0  # validations without improvement before stopping; 0 = never
    save_every: int = 500
    keep_last: int = 2
    log_every: int = 50
    device: str = "auto"  # auto: cuda when there is one (each process of a run its own GPU), else cpu
    # fp32; bf16: autocast to bfloat16 (CUDA, and CPUs with bf16); fp16: autocast to float16 with a
    # grad scaler (CUDA only); auto: bf16 where the device has it, else fp32
    precision: Literal["fp32", "bf16", "fp16", "auto"] = "fp32"
    accumulate: int = 1  # micro-batches per step: each process runs batch_size / (processes * accumulate)
    peer_timeout: float = 10.0  # minutes a process waits for the others of its run before failing
    compile: bool = False  # as search.compile, for the training steps (and validation)
    threads: int = 0  # 0 = all cores
    workers: int = 1  # processes decoding training inputs ahead of the steps (0 = in the training process)
    check_data: Literal["probe", "full"] = "probe"  # up-front check of every input: a header probe, or a decode
    # batches of similar lengths: by input length, or by input then target length (less padding,
    # but BatchNorm in an encoder can then read the target's length, e.g. the object count, from
    # its batch-mates: models learn to say more objects than an input holds)
    bucket: Literal["input", "input+target"] = "input"
    skip_bad: bool = False
    # a frozen encoder's features, computed once and read back in every epoch (mmdesc/features.py)
    cache_features: bool = False
    feature_cache: str = ""  # the cache's folder; "" = OUT/features (any folder: entries are keyed by content)

    def problems(self) -> list[str]:
        found = _positive(self, "batch_size", "lr", "max_steps", "valid_every", "valid_size",
                          "save_every", "keep_last", "log_every")
        found += _non_negative(self, "weight_decay", "clip", "warmup", "max_minutes", "patience", "threads",
                               "workers")
        found += check_range(self, 1, MAX_BATCH, "batch_size") + check_range(self, 0, 1024, "threads", "keep_last")
        found += check_range(self, 0, 256, "workers") + check_range(self, 1, 1024, "accumulate")
        found += check_range(self, 0.1, 10 ** 4, "peer_timeout")
        if self.accumulate > self.batch_size:
            found.append(f"accumulate: {self.accumulate} micro-batches cannot share a batch of {self.batch_size}")
        found += check_range(self, 0, MAX_STEPS, "warmup", "max_steps", "valid_every", "save_every", "log_every",
                             "patience", "valid_size")
        found += check_range(self, 0, 10 ** 7, "max_minutes")
        if self.anneal == "time" and not self.max_minutes > 0:
            found.append("anneal: time needs a time limit (train.max_minutes > 0)")
        if not devices.well_formed(self.device):
            found.append(f"device: {_show(self.device)} is not a device name ({devices.NAMES})")
        from mmdesc.metrics import SELECTION

        if self.metric not in SELECTION:
            found.append(f"metric: {self.metric!r} is not one of {{{', '.join(SELECTION)}}}"
                         f"{_did_you_mean(self.metric, list(SELECTION))}")
        return found


@dataclass(frozen=True)
class Recipe:
    modality: str  # key of MODALITIES
    data: DataConfig
    input: ReaderSlot  # the modality's ReaderConfig; its defaults when absent
    encoder: EncoderSlot  # the modality's EncoderConfig; its defaults when absent
    tokenizer: TokenizerConfig = TokenizerConfig()
    decoder: DecoderConfig = DecoderConfig()
    loss: LossConfig = LossConfig()
    search: SearchConfig = SearchConfig()
    train: TrainConfig = TrainConfig()
    out: str = "runs/default"  # run folder (checkpoints, logs)
    seed: int = 0
    name: str = ""

    def problems(self) -> list[str]:
        found = check_range(self, 0, MAX_SEED, "seed")
        if not self.out.strip():
            found.append("out: is empty; name the run folder (out=runs/NAME)")
        return found


_DEFAULT_TOP = Recipe(modality="", data=None, input=None, encoder=None)  # stands in to check seed and out alone


# ---------------------------------------------------------------- loading


def load_recipe(path: str | Path, overrides: Sequence[str] = (),
                modalities: Mapping[str, Any] = MODALITIES, training: bool = False) -> Recipe:
    """Read a YAML recipe, apply ``a.b.c=value`` overrides, validate; raises ``ConfigError``.

    ``training``: also check what training needs from this machine (``training_problems``),
    reported in the same error as everything else."""
    path = Path(path)
    data = _load_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level, got {_show(data)}")
    errors: list[str] = []
    data = apply_overrides(data, overrides, errors)
    if training:
        errors += training_problems(data)
    return _recipe(data, modalities, errors)


def _load_yaml(path: Path) -> Any:
    """The YAML of ``path``: a regular file of at most MAX_RECIPE_BYTES, nested at most
    MAX_YAML_DEPTH deep, at most MAX_YAML_NODES nodes once aliases are expanded."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as err:
        raise ConfigError(f"{path}: cannot read recipe ({err.strerror or err})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{path}: cannot read recipe (not a regular file)")
        if st.st_size > MAX_RECIPE_BYTES:
            raise ConfigError(f"{path}: a recipe of {st.st_size:,} bytes; more than {MAX_RECIPE_BYTES:,} is refused")
        with os.fdopen(os.dup(fd), "rb") as f:
            raw = f.read(MAX_RECIPE_BYTES + 1)
    except OSError as err:
        raise ConfigError(f"{path}: cannot read recipe ({err.strerror or err})") from None
    finally:
        os.close(fd)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: cannot read recipe (not UTF-8 text)") from None
    try:
        return yaml.load(text, Loader=BoundedLoader)
    except _TooBig as err:
        raise ConfigError(f"{path}: {err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(f"{path}: {where}{getattr(err, 'problem', None) or str(err)[:200]}") from None
    except (ValueError, RecursionError) as err:  # e.g. an integer of more digits than Python converts
        why = "an integer of thousands of digits" if "digits" in str(err) else str(err)[:100]
        raise ConfigError(f"{path}: cannot read recipe ({why})") from None


class _TooBig(yaml.YAMLError):
    pass


class BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses, while composing and before any object is built, a
    document nested deeper than MAX_YAML_DEPTH, one of more than MAX_YAML_NODES values once its
    aliases are expanded (a "billion laughs" alias bomb: a few lines that expand to 10^9
    values), and an alias that refers to the node that contains it."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0
        self._total = 0  # values composed so far, each alias counted as all it stands for
        self._sizes: dict[int, int] = {}  # id(anchored node) -> values it stands for

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            node = self.anchors.get(event.anchor)
            if node is not None and id(node) not in self._sizes:
                raise _TooBig(f"line {event.start_mark.line + 1}: the alias *{event.anchor[:40]} refers to "
                              f"the node that contains it")
            self._count(self._sizes.get(id(node), 0), event)
            return super().compose_node(parent, index)
        self._depth += 1
        start = self._total
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise _TooBig(f"line {self.peek_event().start_mark.line + 1}: nested more than "
                              f"{MAX_YAML_DEPTH} levels deep")
            self._count(1, self.peek_event())
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        self._sizes[id(node)] = self._total - start
        return node

    def _count(self, n: int, event) -> None:
        self._total += n
        if self._total > MAX_YAML_NODES:
            raise _TooBig(f"line {event.start_mark.line + 1}: more than {MAX_YAML_NODES:,} values "
                          f"(aliases expanded); a recipe has a few hundred")


def training_problems(data: Mapping) -> list[str]:
    """What a training needs from this machine, checked on the raw recipe data before anything
    is built: a run folder (``out``) that is not a file and can be written, a device that exists."""
    found = []
    out = data.get("out", Recipe.out)
    if isinstance(out, str) and out.strip():
        found += _out_problems(Path(out))
    train = data.get("train")
    device = train.get("device", TrainConfig.device) if isinstance(train, Mapping) else TrainConfig.device
    if isinstance(device, str) and devices.well_formed(device):
        problem = devices.problem(device)
        if problem:
            found.append(f"train.device: {problem}")
        precision = train.get("precision", TrainConfig.precision) if isinstance(train, Mapping) else "fp32"
        problem = None if problem else devices.precision_problem(precision, device)
        if problem:
            found.append(f"train.precision: {problem}")
    return found


def _out_problems(out: Path) -> list[str]:
    if out.exists() and not out.is_dir():
        return [f"out: {_show(str(out))} is a file, not a run folder"]
    existing = next(p for p in (out, *out.parents) if p.exists() or p == Path(p.anchor or "."))
    if not existing.is_dir():
        return [f"out: {_show(str(existing))} is not a folder, so the run folder cannot be made in it"]
    try:  # really try: permissions, read-only file systems and full disks all show up here
        tempfile.TemporaryDirectory(dir=existing, prefix=".mmdesc-write-test-").cleanup()
    except OSError as err:
        return [f"out: cannot write in {_show(str(existing))} ({err.strerror or err})"]
    return []


def apply_overrides(data: dict, overrides: Sequence[str], errors: list[str]) -> dict:
    """A copy of ``data`` with each ``a.b.c=value`` set; the value is read as YAML."""
    data = copy.deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        keys = key.strip().split(".")
        if not sep or not all(keys):
            errors.append(f"override {_show(item)}: expected key.path=value")
            continue
        node = data
        for depth, k in enumerate(keys[:-1]):
            if node.get(k) is None:
                node[k] = {}
            if not isinstance(node[k], dict):
                errors.append(f"{_name('.'.join(keys[:depth + 1]))}: is {_show(node[k])}, not a section "
                              f"(override {_show(item)})")
                break
            node = node[k]
        else:
            node[keys[-1]] = _override_value(raw)
    return data


def _override_value(raw: str) -> Any:
    if not raw.strip():
        return ""
    try:
        return yaml.load(raw, Loader=BoundedLoader)
    except (yaml.YAMLError, ValueError, RecursionError):
        return raw  # e.g. "a: b: c": keep the text


MOVED = {"decoder.ds_penalty": "loss.ds_penalty", "train.label_smoothing": "loss.label_smoothing"}
# Keys replaced by another that takes other values: old key -> (new key, old value -> new value)
REPLACED = {"train.amp": ("train.precision", lambda on: "bf16" if on is True else "fp32",
                          "amp: true is precision: bf16")}


def recipe_from_dict(d: Mapping, modalities: Mapping[str, Any] = MODALITIES) -> Recipe:
    """Validate plain data (a parsed YAML file, or ``recipe_to_dict`` output) into a ``Recipe``.

    Keys that moved (``MOVED``) or were replaced (``REPLACED``) are carried to their new place,
    so that checkpoints saved before the move still load; in a YAML recipe they are an error
    naming the new place."""
    return _recipe(_migrate(d), modalities, [])


def _migrate(d: Any) -> Any:
    if not isinstance(d, Mapping):
        return d
    d = copy.deepcopy(dict(d))
    carried = [(old, new, lambda v: v) for old, new in MOVED.items()]
    carried += [(old, new, convert) for old, (new, convert, _) in REPLACED.items()]
    for old, new, convert in carried:
        (s_old, k_old), (s_new, k_new) = old.split("."), new.split(".")
        section = d.get(s_old)
        if isinstance(section, dict) and k_old in section:
            value = section.pop(k_old)
            target = d.setdefault(s_new, {})
            if isinstance(target, dict):
                target.setdefault(k_new, convert(value))
    return d


def _recipe(d: Mapping, modalities: Mapping[str, Any], errors: list[str]) -> Recipe:
    if not isinstance(d, Mapping):
        raise ConfigError(errors + [f"recipe: expected a mapping, got {_show(d)}"])
    swap = None
    name, names = d.get("modality"), list(modalities)  # list(): keys without importing modules
    if isinstance(name, str) and name not in names:
        errors.append(f"modality: {_show(name)} is not one of {{{', '.join(names)}}}{_did_you_mean(name, names)}")
    elif isinstance(name, str):
        module = modalities[name]
        swap = {ReaderSlot: module.ReaderConfig, EncoderSlot: module.EncoderConfig,
                SplitSlot: module.SplitConfig}
    recipe = parse_dataclass(Recipe, d, "", errors, swap)
    if recipe is None:  # a section failed, so Recipe.problems() did not run: its checks, on what parsed
        top: list[str] = []
        values = {k: parse_value(_hints(Recipe)[k], d[k], k, top) for k in ("seed", "out") if k in d}
        if not top:
            errors += Recipe.problems(dataclasses.replace(_DEFAULT_TOP, **values))
    if errors:
        raise ConfigError(errors)
    return recipe


def recipe_to_dict(r: Recipe) -> dict:
    """Plain JSON-able data (tuples become lists) that ``recipe_from_dict`` turns back into ``r``."""
    return _plain(r)


def _plain(x: Any) -> Any:
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {f.name: _plain(getattr(x, f.name)) for f in dataclasses.fields(x) if f.init}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, Mapping):
        return {k: _plain(v) for k, v in x.items()}
    return str(x) if isinstance(x, Path) else x


# ---------------------------------------------------------------- typed parsing


def parse_dataclass(cls: type, data: Any, path: str, errors: list[str],
                    swap: Mapping[type, type] | None = None) -> Any:
    """Build ``cls`` from a mapping, appending each problem to ``errors`` with its dotted path.

    Absent keys take their defaults; an absent section whose fields all have defaults is
    built from them; ``null`` for a section means ``{}``. ``swap`` replaces placeholder
    types (the ``*Slot`` classes). Returns ``None`` when the instance cannot be built.
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        errors.append(f"{path or 'recipe'}: expected a mapping, got {_show(data)}")
        return None
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if _join(path, key) in MOVED:
            errors.append(f"{_join(path, key)}: moved to {MOVED[_join(path, key)]}")
        elif _join(path, key) in REPLACED:
            new, _, hint = REPLACED[_join(path, key)]
            errors.append(f"{_join(path, key)}: replaced by {new} ({hint})")
        elif key not in fields:
            errors.append(f"{_join(path, _name(key))}: unknown key — {_suggest_key(str(key), list(fields))}")
    hints, values, ok, failed = _hints(cls), {}, True, set()
    for name, f in fields.items():
        tp, where, before = (swap or {}).get(hints[name], hints[name]), _join(path, name), len(errors)
        if name in data:
            values[name] = parse_value(tp, data[name], where, errors, swap)
        elif f.default is not dataclasses.MISSING:
            values[name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            values[name] = f.default_factory()
        elif dataclasses.is_dataclass(tp) and _all_defaults(tp):
            values[name] = parse_dataclass(tp, {}, where, errors, swap)
        elif tp in _SLOTS:  # unresolved: the bad modality is reported already
            values[name] = None
        else:
            errors.append(f"{path or 'recipe'}: missing required key '{name}'")
        if len(errors) > before:
            ok = False
            failed.add(name)
    if not ok:
        errors.extend(_join(path, p) for p in _problems_of_the_rest(cls, fields, values, failed))
        return None
    obj = cls(**values)
    errors.extend(_join(path, p) for p in _first_per_field(all_problems(obj)))
    return obj


def all_problems(cfg: object) -> list[str]:
    """``problems()`` of a config and of each config class it extends that has its own (a
    modality's ``EncoderConfig`` extends ``EncoderTransfer``)."""
    found: list[str] = []
    for klass in type(cfg).__mro__:
        own = klass.__dict__.get("problems")
        if own is not None:
            found += own(cfg)
    return found


def _problems_of_the_rest(cls: type, fields: Mapping, values: dict, failed: set) -> list[str]:
    """Where some fields failed to parse: ``problems()`` of the fields that did, with the failed
    ones at their defaults (if they all have one), so every problem is still reported at once."""
    if not hasattr(cls, "problems") or any(fields[n].default is dataclasses.MISSING for n in failed):
        return []
    try:
        trial = cls(**{**values, **{n: fields[n].default for n in failed}})
    except (TypeError, ValueError):
        return []
    return [p for p in _first_per_field(all_problems(trial)) if p.partition(":")[0] not in failed]


def _first_per_field(problems: list[str]) -> list[str]:
    """One problem per field (the first found): one line each."""
    seen: set[str] = set()
    out = []
    for p in problems:
        name = p.partition(":")[0]
        if name not in seen:
            seen.add(name)
            out.append(p)
    return out


def parse_value(tp: Any, value: Any, path: str, errors: list[str],
                swap: Mapping[type, type] | None = None) -> Any:
    """Check ``value`` against the annotation ``tp``; the converted value, or ``None`` on error."""
    tp = (swap or {}).get(tp, tp)
    if tp in _SLOTS:
        return None
    if tp is Any or tp is object:
        return value
    if dataclasses.is_dataclass(tp):
        return parse_dataclass(tp, value, path, errors, swap)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return _parse_union(args, value, path, errors, swap)
    if origin is Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
        choices = [str(a) for a in args]
        hint = _did_you_mean(value, choices) if isinstance(value, str) else ""
        errors.append(f"{path}: {_show(value)} is not one of {{{', '.join(choices)}}}{hint}")
        return None
    if origin in (tuple, list):
        return _parse_sequence(origin, args, value, path, errors, swap)
    if tp in (bool, int, float, str):
        return _parse_scalar(tp, value, path, errors)
    raise TypeError(f"{path}: config annotation {tp!r} is not supported")


def _parse_union(args: tuple, value: Any, path: str, errors: list[str], swap: Any) -> Any:
    options = [a for a in args if a is not type(None)]
    if value is None and len(options) < len(args):
        return None
    if len(options) == 1:
        return parse_value(options[0], value, path, errors, swap)
    for option in options:
        trial: list[str] = []
        out = parse_value(option, value, path, trial, swap)
        if not trial:
            return out
    errors.append(f"{path}: expected {' or '.join(getattr(o, '__name__', str(o)) for o in options)}, "
                  f"got {_show(value)}")
    return None


def _parse_sequence(origin: type, args: tuple, value: Any, path: str, errors: list[str], swap: Any) -> Any:
    if not isinstance(value, (list, tuple)):
        errors.append(f"{path}: expected a list, got {_show(value)}")
        return None
    if origin is tuple and args and args[-1] is not Ellipsis:  # fixed length: tuple[int, int]
        if len(value) != len(args):
            errors.append(f"{path}: expected {len(args)} items, got {len(value)}")
            return None
        item_types = args
    else:
        item_types = [args[0] if args else Any] * len(value)
    items = [parse_value(t, v, f"{path}[{i}]", errors, swap)
             for i, (t, v) in enumerate(zip(item_types, value))]
    return tuple(items) if origin is tuple else items


_SCIENTIFIC = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")  # PyYAML reads 1e-3 as a string


def _parse_scalar(tp: type, value: Any, path: str, errors: list[str]) -> Any:
    if tp in (int, float) and isinstance(value, str) and _SCIENTIFIC.fullmatch(value.strip()):
        value = float(value)
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp in (int, float) and is_number and not (math.isfinite(value) and abs(value) <= MAX_INT):
        errors.append(f"{path}: expected a finite number of magnitude at most 2^53, got {_show(value)}")
        return None
    if (tp is bool and isinstance(value, bool)) or (tp is str and isinstance(value, str)):
        return value
    if tp is int and is_number and float(value).is_integer():
        return int(value)
    if tp is float and is_number:
        return float(value)
    expected = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[tp]
    errors.append(f"{path}: expected {expected}, got {_show(value)}")
    return None


# ---------------------------------------------------------------- helpers

_SLOTS = (ReaderSlot, EncoderSlot, SplitSlot)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _all_defaults(cls: type) -> bool:
    return all(f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
               for f in dataclasses.fields(cls) if f.init)


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _did_you_mean(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word[:100], list(choices), n=1)
    return f" — did you mean '{close[0]}'?" if close else ""


def _suggest_key(word: str, keys: Sequence[str]) -> str:
    close = difflib.get_close_matches(word[:100], list(keys), n=1)
    return f"did you mean '{close[0]}'?" if close else f"valid keys: {', '.join(sorted(keys))}"


_PLAIN_NAME = re.compile(r"[\w.\-\[\]]{1,60}")


def _name(key: object) -> str:
    """A key as it appears in a dotted path: as it is when short and plain, else like _show."""
    return key if isinstance(key, str) and _PLAIN_NAME.fullmatch(key) else _show(key)


def _show(value: Any) -> str:
    """A value in a message: short, on one line, never the whole of a big value."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        scalars = all(v is None or isinstance(v, (bool, int, float, str)) for v in value)
        return "[" + ", ".join(_show(v) for v in value) + "]" if len(value) <= 3 and scalars \
            else f"a list of {len(value)}"
    if isinstance(value, int) and value.bit_length() > 64:
        return f"an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits"
    text = repr(value[:40] if isinstance(value, str) else value)
    return text if len(text) <= 40 else text[:37] + "..."
