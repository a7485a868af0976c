"""The one place where a recipe meets constructors: config in, plain objects out."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from mmdesc.corpora import Example
from mmdesc.errors import ConfigError, DataError
from mmdesc.modalities import MODALITIES


@dataclass
class Trained:
    """Everything a trained model needs to describe inputs: loaded from one checkpoint."""

    model: object  # Describer
    reader: object
    tokenizer: object
    recipe: object  # Recipe
    meta: dict
    path: Path

    @property
    def modality(self) -> str:
        return self.recipe.modality


def modality(recipe):
    return MODALITIES[recipe.modality]


def ensure_data(recipe, say: Callable[[str], None] = print) -> None:
    """Generate the synthetic corpus under ``data.root`` when the recipe asks for it and it is missing."""
    from mmdesc.corpora.synth import is_complete

    root, synth = Path(recipe.data.root), recipe.data.synth
    if synth is None or is_complete(root, recipe.modality):
        return
    say(f"generating the synthetic {recipe.modality} corpus in {root} "
        f"({synth.train}/{synth.valid}/{synth.test} scenes) ...")
    write_part(modality(recipe), root, synth.train, synth.valid, synth.test, synth.seed, synth.shift)


def write_part(module, root: Path, train: int, valid: int, test: int, seed: int, shift: int = 0) -> bool:
    """``module.synthesize`` with a shifted test split where the modality writes one; returns
    whether it did."""
    import inspect

    shifted = shift > 0 and "shift" in inspect.signature(module.synthesize).parameters
    module.synthesize(root, train, valid, test, seed, **({"shift": shift} if shifted else {}))
    return shifted


def check_data(recipe) -> None:
    """Every path the data splits name exists: all missing ones reported at once, before anything heavy."""
    problems = []
    for split in ("train", "valid", "test"):
        problems += _split_problems(recipe, split)
    if problems:
        raise ConfigError(problems)


def _split_problems(recipe, split: str) -> list[str]:
    """Paths of one split that do not exist or are neither a file nor a folder (a FIFO or a
    device would hang or never end the reading)."""
    from dataclasses import fields

    root, cfg, problems = Path(recipe.data.root), getattr(recipe.data, split, None), []
    for f in fields(cfg) if cfg is not None else ():
        value = getattr(cfg, f.name)
        if isinstance(value, str) and value and f.metadata.get("path", True):
            p = root / value
            if not p.exists():
                problems.append(f"data.{split}.{f.name}: {p} does not exist")
            elif not (p.is_file() or p.is_dir()):
                problems.append(f"data.{split}.{f.name}: {p} is not a regular file or a folder")
    return problems


def read_split(recipe, split: str) -> list[Example]:
    """The examples of ``split`` (train, valid or test) as the recipe names them."""
    cfg = getattr(recipe.data, split, None)
    if cfg is None:
        raise ConfigError(f"data.{split}: the recipe names no {split} split")
    problems = _split_problems(recipe, split)
    if problems:
        raise ConfigError(problems)
    examples = modality(recipe).read_split(cfg, Path(recipe.data.root))
    if not examples:
        raise DataError(f"data.{split}: the {split} split is empty")
    return examples


def build_reader(recipe):
    return modality(recipe).Reader(**asdict(recipe.input))


def build_tokenizer(recipe, examples: list[Example]):
    from mmdesc.tokenize import Tokenizer

    t = recipe.tokenizer
    return Tokenizer.train((r for ex in examples for r in ex.references), kind=t.kind,
                           vocab_size=t.vocab_size, model_type=t.model_type)


def build_model(recipe, reader, tokenizer, pretrained: bool = True):
    """The Describer a recipe describes. ``pretrained=False``: weights will come from a
    checkpoint, so no pretrained-weights file is read (the encoder section's
    ``without_pretrained()``, where it has one): a trained checkpoint is self-contained."""
    from mmdesc.decoder import Decoder
    from mmdesc.model import Describer

    enc = recipe.encoder
    if not pretrained and hasattr(enc, "without_pretrained"):
        enc = enc.without_pretrained()
    encoder = modality(recipe).Encoder(**asdict(enc), **reader.encoder_kwargs())
    decoder = Decoder(len(tokenizer), encoder.out_dim, **asdict(recipe.decoder))
    return Describer(encoder, decoder, ctc_vocab=len(tokenizer) if recipe.loss.ctc > 0 else 0)


def build_objective(recipe):
    from mmdesc.objective import Objective

    return Objective(**asdict(recipe.loss), hard=recipe.decoder.attention_mode == "hard")


def search_kwargs(search) -> dict:
    """The search section as arguments of ``Describer.generate``."""
    return {k: v for k, v in asdict(search).items() if k not in ("batch_size", "compile")}


def use_search(trained, search) -> dict:
    """Set ``trained``'s model up for the search section ``search`` (``compile``: the fused
    attention score) and return the arguments of ``Describer.generate``."""
    trained.model.decoder.fuse_attention(search.compile)
    return search_kwargs(search)


def checkpoint_meta(recipe, reader, tokenizer, **extra) -> dict:
    from mmdesc.config import recipe_to_dict

    return {"recipe": recipe_to_dict(recipe), "tokenizer": tokenizer.to_dict(), "reader": reader.state(), **extra}


def load_trained(path: str | Path, device: str = "cpu") -> Trained:
    """Rebuild a trained model from a checkpoint (or run) folder, ready for inference.

    Nothing in the folder is trusted: the metadata is validated field by field, the model
    is first built on the meta device (no memory) and compared with the weights file's
    header, and only then built for real; any problem is one ``CheckpointError`` line."""
    import torch

    from mmdesc import checkpoint
    from mmdesc.config import recipe_from_dict
    from mmdesc.errors import CheckpointError
    from mmdesc.tokenize import Tokenizer

    path = checkpoint.resolve(path)
    meta = checkpoint.read_meta(path)
    missing = [k for k in ("recipe", "tokenizer") if k not in meta]
    if missing:
        raise CheckpointError(f"{path / checkpoint.META}: has no {' and no '.join(missing)}; not a model checkpoint")
    try:
        recipe = recipe_from_dict(meta["recipe"])
    except ConfigError as e:
        more = f" (and {len(e.problems) - 3} more)" if len(e.problems) > 3 else ""
        raise CheckpointError(f"{path}: its recipe is not valid: {'; '.join(e.problems[:3])}{more}") from None
    try:
        tokenizer = Tokenizer.from_dict(meta["tokenizer"])
        reader = build_reader(recipe)
        reader.load_state(meta.get("reader", {}))
    except (KeyError, ValueError, TypeError, RuntimeError, AttributeError, ConfigError) as e:
        raise CheckpointError(f"{path}: the checkpoint's tokenizer or reader state is not usable "
                              f"({str(e)[:120] or type(e).__name__})") from None
    try:
        with torch.device("meta"):
            shapes = build_model(recipe, reader, tokenizer, pretrained=False)
    except (ValueError, TypeError, RuntimeError) as e:
        raise CheckpointError(f"{path}: its recipe does not build a model ({str(e)[:120]})") from None
    checkpoint.check_weights(path, shapes)
    model = build_model(recipe, reader, tokenizer, pretrained=False)
    checkpoint.load_weights(path, model)
    model.to(device).eval()
    return Trained(model, reader, tokenizer, recipe, meta, path)
