"""Recipes: YAML -> ``key=value`` overrides -> typed, frozen dataclasses.

    recipe = load_recipe("recipes/image.yaml", ["decoder.hidden=512", "train.lr=3e-4"])

Every problem (unknown key, wrong type, value out of range) is collected with its dotted
path and raised at once as one ``ConfigError``. The sections that belong to a modality
(``input:``, ``encoder:``, ``data.train/valid/test:``) take their dataclasses from the
module that ``modality:`` names in ``MODALITIES``. ``recipe_to_dict``/``recipe_from_dict``
round-trip a recipe through JSON-able data, to save it inside checkpoints.

A config dataclass (a modality's too) may define ``problems(self) -> list[str]``: cheap
sanity checks, each message starting with the field name; the section path is prefixed.
Nothing here imports torch.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from mmdesc.errors import ConfigError
from mmdesc.modalities import MODALITIES


class ReaderSlot:
    """Stands for the modality's ``ReaderConfig``; swapped in when a recipe is parsed."""


class EncoderSlot:
    """Stands for the modality's ``EncoderConfig``; swapped in when a recipe is parsed."""


class SplitSlot:
    """Stands for the modality's ``SplitConfig``; swapped in when a recipe is parsed."""


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

    def problems(self) -> list[str]:
        return _positive(self, "train", "valid") + _non_negative(self, "test")


@dataclass(frozen=True, kw_only=True)  # kw_only: required splits follow defaulted fields
class DataConfig:
    root: str = "data/synth"  # relative split paths resolve against this
    synth: SynthConfig | None = None  # null/absent = never generate
    train: SplitSlot
    valid: SplitSlot
    test: SplitSlot | None = None
    max_target_words: int = 60  # longer training targets are truncated

    def problems(self) -> list[str]:
        return _positive(self, "max_target_words")


@dataclass(frozen=True)
class TokenizerConfig:
    kind: Literal["sentencepiece", "word"] = "sentencepiece"
    vocab_size: int = 1000
    model_type: Literal["unigram", "bpe"] = "unigram"

    def problems(self) -> list[str]:
        return _positive(self, "vocab_size")


@dataclass(frozen=True)
class DecoderConfig:
    cell: Literal["gru", "lstm"] = "gru"
    attention: Literal["mlp", "dot", "location"] = "mlp"  # location: Chorowski et al. 2015
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

    def problems(self) -> list[str]:
        found = _positive(self, "emb", "hidden", "att", "out", "location_channels", "location_kernel")
        found += _fraction(self, "dropout")
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

    def problems(self) -> list[str]:
        return _non_negative(self, "ds_penalty") + _fraction(self, "label_smoothing", "ctc")


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
    compile: bool = False  # additive attention's score as one torch.compile'd loop (Decoder.fuse_attention)
    max_attention_shift: int = 0  # > 0: end a hypothesis whose attention peak jumps further than this

    def problems(self) -> list[str]:
        found = _positive(self, "beam", "n_best", "max_len", "batch_size")
        found += _non_negative(self, "max_len_a", "min_len", "length_penalty", "max_attention_shift")
        if self.n_best > self.beam:
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
    valid_every: int = 500
    valid_size: int = 300  # items of the valid split scored with beam search
    metric: str = "bleu"  # the validation score that picks best/ (metrics.SELECTION: name -> direction)
    patience: int = 0  # validations without improvement before stopping; 0 = never
    save_every: int = 500
    keep_last: int = 2
    log_every: int = 50
    device: str = "auto"
    amp: bool = False
    compile: bool = False  # as search.compile, for the training steps (and validation)
    threads: int = 0  # 0 = all cores
    workers: int = 1  # processes decoding training inputs ahead of the steps (0 = in the training process)
    check_data: Literal["probe", "full"] = "probe"  # up-front check of every input: a header probe, or a decode
    skip_bad: bool = False

    def problems(self) -> list[str]:
        found = _positive(self, "batch_size", "lr", "max_steps", "valid_every", "valid_size",
                          "save_every", "keep_last", "log_every")
        found += _non_negative(self, "weight_decay", "clip", "warmup", "max_minutes", "patience", "threads",
                               "workers")
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


# ---------------------------------------------------------------- loading


def load_recipe(path: str | Path, overrides: Sequence[str] = (),
                modalities: Mapping[str, Any] = MODALITIES) -> Recipe:
    """Read a YAML recipe, apply ``a.b.c=value`` overrides, validate; raises ``ConfigError``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read recipe ({getattr(err, 'strerror', None) or err})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(f"{path}: {where}{getattr(err, 'problem', None) or err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level, got {_show(data)}")
    errors: list[str] = []
    data = apply_overrides(data, overrides, errors)
    return _recipe(data, modalities, errors)


def apply_overrides(data: dict, overrides: Sequence[str], errors: list[str]) -> dict:
    """A copy of ``data`` with each ``a.b.c=value`` set; the value is read as YAML."""
    data = copy.deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        keys = key.strip().split(".")
        if not sep or not all(keys):
            errors.append(f"override {item!r}: expected key.path=value")
            continue
        node = data
        for depth, k in enumerate(keys[:-1]):
            if node.get(k) is None:
                node[k] = {}
            if not isinstance(node[k], dict):
                errors.append(f"{'.'.join(keys[:depth + 1])}: is {_show(node[k])}, not a section "
                              f"(override {item!r})")
                break
            node = node[k]
        else:
            node[keys[-1]] = _override_value(raw)
    return data


def _override_value(raw: str) -> Any:
    if not raw.strip():
        return ""
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw  # e.g. "a: b: c": keep the text


MOVED = {"decoder.ds_penalty": "loss.ds_penalty", "train.label_smoothing": "loss.label_smoothing"}


def recipe_from_dict(d: Mapping, modalities: Mapping[str, Any] = MODALITIES) -> Recipe:
    """Validate plain data (a parsed YAML file, or ``recipe_to_dict`` output) into a ``Recipe``.

    Keys that moved (``MOVED``) are carried to their new place, so that checkpoints saved
    before the move still load; in a YAML recipe they are an error naming the new place."""
    return _recipe(_migrate(d), modalities, [])


def _migrate(d: Any) -> Any:
    if not isinstance(d, Mapping):
        return d
    d = copy.deepcopy(dict(d))
    for old, new in MOVED.items():
        (s_old, k_old), (s_new, k_new) = old.split("."), new.split(".")
        section = d.get(s_old)
        if isinstance(section, dict) and k_old in section:
            value = section.pop(k_old)
            target = d.setdefault(s_new, {})
            if isinstance(target, dict):
                target.setdefault(k_new, value)
    return d


def _recipe(d: Mapping, modalities: Mapping[str, Any], errors: list[str]) -> Recipe:
    if not isinstance(d, Mapping):
        raise ConfigError(errors + [f"recipe: expected a mapping, got {_show(d)}"])
    swap = None
    name, names = d.get("modality"), list(modalities)  # list(): keys without importing modules
    if isinstance(name, str) and name not in names:
        errors.append(f"modality: {name!r} is not one of {{{', '.join(names)}}}{_did_you_mean(name, names)}")
    elif isinstance(name, str):
        module = modalities[name]
        swap = {ReaderSlot: module.ReaderConfig, EncoderSlot: module.EncoderConfig,
                SplitSlot: module.SplitConfig}
    recipe = parse_dataclass(Recipe, d, "", errors, swap)
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
        elif key not in fields:
            errors.append(f"{_join(path, key)}: unknown key — {_suggest_key(str(key), list(fields))}")
    hints, values, ok = _hints(cls), {}, True
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
        ok = ok and len(errors) == before
    if not ok:
        return None
    obj = cls(**values)
    errors.extend(f"{_join(path, p)}" for p in getattr(obj, "problems", list)())
    return obj


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
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" — did you mean '{close[0]}'?" if close else ""


def _suggest_key(word: str, keys: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(keys), n=1)
    return f"did you mean '{close[0]}'?" if close else f"valid keys: {', '.join(sorted(keys))}"


def _show(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, Mapping):
        return "a mapping"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
