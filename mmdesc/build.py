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
    """Generate the recipe's part of the synthetic corpus under ``data.root`` when the recipe
    asks for one and it is missing, or was written with another seed or other counts (a part
    is never read at a size the recipe did not ask for)."""
    from mmdesc.corpora.synth import SHIFT_SPLIT, written_with

    root, synth = Path(recipe.data.root), recipe.data.synth
    if synth is None:
        return
    module = modality(recipe)
    asked = {"seed": synth.seed, "train": synth.train, "valid": synth.valid, "test": synth.test}
    if synth.shift and writes_shift(module):
        asked[SHIFT_SPLIT] = synth.shift
    have = written_with(root, recipe.modality)
    if have is not None and all(have.get(k) == v for k, v in asked.items()):
        return
    if have is not None:
        say(f"{root}: its {recipe.modality} part was written with {_counts(have)}, the recipe asks "
            f"{_counts(asked)}: writing it again")
    say(f"generating the synthetic {recipe.modality} corpus in {root} "
        f"({synth.train}/{synth.valid}/{synth.test} scenes) ...")
    write_part(module, root, synth.train, synth.valid, synth.test, synth.seed, synth.shift)


def _counts(info: dict) -> str:
    from mmdesc.corpora.synth import SHIFT_SPLIT

    shift = f" + {info[SHIFT_SPLIT]} shifted" if info.get(SHIFT_SPLIT) else ""
    return (f"{info.get('train')}/{info.get('valid')}/{info.get('test')} scenes{shift} "
            f"(seed {info.get('seed')})")


def writes_shift(module) -> bool:
    """Whether a modality's ``synthesize`` writes a shifted test split."""
    import inspect

    return "shift" in inspect.signature(module.synthesize).parameters


def write_part(module, root: Path, train: int, valid: int, test: int, seed: int, shift: int = 0) -> bool:
    """``module.synthesize`` with a shifted test split where the modality writes one; returns
    whether it did."""
    shifted = shift > 0 and writes_shift(module)
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


def fit_reader(recipe, reader, examples: list[Example]) -> None:
    """Fit a new run's reader on its training examples, or, with ``encoder.init_from``, give it
    the state of the reader that encoder was trained with (mmdesc/transfer.py)."""
    from mmdesc import transfer

    state = transfer.reader_state(getattr(recipe.encoder, "init_from", ""), recipe.modality)
    if state is None:
        reader.fit(examples)
    else:
        reader.load_state(state)


def build_tokenizer(recipe, examples: list[Example]):
    """A new run's tokenizer, trained on its training references; with ``decoder.init_from``,
    that decoder's tokenizer (mmdesc/transfer.py)."""
    from mmdesc import transfer
    from mmdesc.tokenize import Tokenizer

    adopted = transfer.tokenizer(recipe.decoder.init_from, recipe.modality)
    if adopted is not None:
        return adopted
    t = recipe.tokenizer
    return Tokenizer.train((r for ex in examples for r in ex.references), kind=t.kind,
                           vocab_size=t.vocab_size, model_type=t.model_type)


def build_encoder(recipe, reader, pretrained: bool = True):
    """The recipe's encoder alone, its pretrained backbone weights read unless ``pretrained=False``
    (``encoder.init_from`` is applied by ``build_model``)."""
    from mmdesc.config import constructor_args

    enc = recipe.encoder
    if not pretrained and hasattr(enc, "without_pretrained"):
        enc = enc.without_pretrained()
    return modality(recipe).Encoder(**constructor_args(enc), **reader.encoder_kwargs())


def build_model(recipe, reader, tokenizer, pretrained: bool = True, say: Callable[[str], None] = print):
    """The Describer a recipe describes. ``pretrained=False``: weights will come from a
    checkpoint, so no pretrained-weights file is read (the encoder section's
    ``without_pretrained()``, where it has one), nor any other model's checkpoint or word
    vectors (``init_from``, ``embeddings``, applied with ``pretrained=True`` and reported
    through ``say``): a trained checkpoint is self-contained."""
    from mmdesc import transfer
    from mmdesc.config import constructor_args
    from mmdesc.decoder import Decoder
    from mmdesc.model import Describer

    encoder = build_encoder(recipe, reader, pretrained)
    decoder = Decoder(len(tokenizer), encoder.out_dim, key_dim=getattr(encoder, "key_dim", None),
                      **constructor_args(recipe.decoder))
    model = Describer(encoder, decoder, ctc_vocab=len(tokenizer) if recipe.loss.ctc > 0 else 0)
    if pretrained:
        transfer.initialise(model, tokenizer, recipe.modality, getattr(recipe.encoder, "init_from", ""),
                            recipe.decoder.init_from, recipe.decoder.embeddings, say)
    return model


def param_groups(recipe, model) -> list[dict]:
    """The optimizer's parameter groups (weight decay on matrices; the backbone's own group at
    ``encoder.backbone_lr``, with what ``encoder.unfreeze_at`` will train; mmdesc/transfer.py)."""
    from mmdesc import transfer

    enc = recipe.encoder
    return transfer.param_groups(model, recipe.train.weight_decay, getattr(enc, "backbone_lr", 0.0),
                                 getattr(enc, "unfreeze_at", 0))


def unfreeze(recipe, model, step: int) -> bool:
    """Before training step ``step``: the backbone trains from ``encoder.unfreeze_at`` on."""
    from mmdesc import transfer

    return transfer.unfreeze(model, step, getattr(recipe.encoder, "unfreeze_at", 0))


def feature_folder(recipe) -> Path:
    """Where cached encoder features live: ``train.feature_cache``, else ``OUT/features``."""
    return Path(recipe.train.feature_cache or Path(recipe.out) / "features")


def cache_features(recipe, encoder, reader, examples: list[Example], device, say: Callable[[str], None] = print):
    """The feature store of ``encoder`` with every example's input in it (computed where
    missing), the examples' keys and the key -> MediaError of the unreadable ones
    (mmdesc/features.py); a ``ConfigError`` when the recipe's encoder cannot be cached."""
    import torch

    from mmdesc import features
    from mmdesc.config import constructor_args

    settings = {"modality": recipe.modality, "input": asdict(recipe.input), "reader": reader.state(),
                "encoder": constructor_args(recipe.encoder)}
    batch = recipe.search.batch_size if torch.device(device).type == "cuda" else features.CPU_BATCH
    return features.cached(feature_folder(recipe), settings, encoder, reader, [ex.source for ex in examples],
                           batch, device, getattr(recipe.encoder, "unfreeze_at", 0), recipe.modality, say)


def cached_training_data(recipe, model, reader, examples: list[Example], pairs, device,
                         say: Callable[[str], None] = print, truth=None):
    """``train.cache_features``: the training pairs over cached features, and their collate
    (mmdesc/features.py), in place of ``data.Pairs`` and ``data.Collate``; ``truth`` as theirs."""
    from mmdesc import features

    store, keys, failures = cache_features(recipe, model.encoder, reader, examples, device, say)
    features.report(failures, len(examples), "train", recipe.train.skip_bad, say)
    return features.CachedPairs(store, keys, pairs, failures, truth), features.FeatureCollate()


def cache_split(recipe, split: str = "train", say: Callable[[str], None] = print) -> tuple[int, int]:
    """``mmdesc data cache``: the features of every input of ``split`` in the recipe's feature
    cache, computed by the encoder a new training of the recipe starts with (same seed, same
    pretrained weights, same reader state); returns (inputs cached, unreadable ones skipped)."""
    import random

    import torch

    from mmdesc import devices, features, transfer

    random.seed(recipe.seed)
    torch.manual_seed(recipe.seed)
    ensure_data(recipe, say)
    check_data(recipe)
    reader = build_reader(recipe)
    train = read_split(recipe, "train")
    fit_reader(recipe, reader, train)
    examples = train if split == "train" else read_split(recipe, split)
    device = torch.device(devices.resolve(recipe.train.device))
    torch.set_num_threads(recipe.train.threads or torch.get_num_threads())
    encoder = build_encoder(recipe, reader)  # the first weights a training draws: the same ones
    if getattr(recipe.encoder, "init_from", ""):
        transfer.load_part(encoder, "encoder.", "encoder.init_from", recipe.encoder.init_from, recipe.modality)
    store, keys, failures = cache_features(recipe, encoder.to(device), reader, examples, device, say)
    features.report(failures, len(examples), split, recipe.train.skip_bad, say)
    return len(set(keys)) - len(failures), len(failures)


def build_objective(recipe):
    from mmdesc.objective import Objective

    return Objective(**asdict(recipe.loss), hard=recipe.decoder.attention_mode == "hard")


def search_kwargs(search) -> dict:
    """The search section as arguments of ``Describer.generate``."""
    return {k: v for k, v in asdict(search).items() if k not in ("batch_size", "compile", "precision")}


def use_search(trained, search) -> dict:
    """Set ``trained``'s model up for the search section ``search`` (``compile``: the fused
    attention score, and on CUDA the decode step as CUDA graphs; ``precision``: the model
    converted, ``mmdesc.precision``) and return the arguments of ``Describer.generate``."""
    from mmdesc import graphs, precision

    precision.convert(trained.model, search.precision)
    trained.model.decoder.fuse_attention(search.compile)
    graphs.capture_steps(trained.model.decoder, search.compile)
    kwargs = search_kwargs(search)
    if search.sample:  # one stream of draws for every batch the command decodes
        from mmdesc.search.sample import generator_for

        kwargs["generator"] = generator_for(next(trained.model.parameters()).device, search.seed)
    return kwargs


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


# ---------------------------------------------------------------------------------------------
# Training: the parts of a run, assembled in named steps


@dataclass
class TrainingParts:
    """What one process of a training run trains with, as ``setup_training`` assembles it.

    ``model`` is the plain Describer: what is saved (so a checkpoint loads anywhere), validated
    and restored; ``net`` is what the training steps run: the model itself, or its
    DistributedDataParallel wrapper when the run has several processes."""

    recipe: object
    processes: object  # distributed.Processes
    device: object  # torch.device
    precision: str  # fp32, bf16 or fp16
    reader: object
    tokenizer: object
    dataset: object  # data.Pairs: (input, target ids) of every training pair, decoded on demand
    collate: object  # data.Collate
    lengths: list[int]  # per training pair: its sort key for length bucketing
    targets: list[int]  # per training pair: the target tokens its loss counts (words + EOS)
    valid: object  # data.Loaded: this process's share of the valid split
    valid_index: list[int]  # per example of ``valid``: its index in the valid split
    model: object
    net: object
    objective: object
    optimizer: object
    schedule: object
    scaler: object | None  # fp16's GradScaler
    progress: object  # train.Progress
    resumed_from: Path | None = None


def start_processes(recipe):
    """This process's place in its run (``distributed.start``): several when torchrun started
    them, NCCL between them when they train on CUDA, gloo otherwise."""
    from mmdesc import devices, distributed

    cuda = devices.resolve(recipe.train.device).startswith("cuda")
    return distributed.start(cuda, recipe.train.peer_timeout)


def setup_training(recipe, say: Callable[[str], None] = print, resume: bool = True, processes=None) -> TrainingParts:
    """The parts of a training run, step by step. Every process runs every step; where rank 0
    alone does the work, the others wait for its result (and stop with it when it fails):

    ====================  ===========================  ====================================  ==========================
    step                  every process                rank 0 alone                          a cached-feature run
    ====================  ===========================  ====================================  ==========================
    ``setup_data``        waits                        generates missing synthetic data;
                                                       checks the paths of every split
    ``setup_vocabulary``  takes rank 0's reader state  fits the reader and the tokenizer on
                          and tokenizer                the train split (or takes them from
                                                       the checkpoint it resumes)
    ``setup_examples``    tokenizes the train pairs;   probes every train input: the usable  takes the lengths from the
                          loads its share of the       ones and their lengths                cache: no input probed
                          valid split
    ``setup_inputs``      the dataset that decodes a                                         a dataset of cached
                          pair's input when a batch                                          encoder outputs: no media
                          asks for it                                                        decoded, no encoder run
    ``setup_model``       the model (the same seed                                           the same model: its
                          everywhere) on its device                                          frozen encoder is saved
    ``setup_optimizer``   AdamW, the schedule, fp16's                                        the frozen encoder has
                          grad scaler                                                        no parameter in it
    ``setup_restore``     weights, optimizer,          trims the log to the checkpoint's
                          schedule, progress and its   step
                          own RNG state
    ``setup_parallel``    DistributedDataParallel
                          around the model
    ====================  ===========================  ====================================  ==========================

    Training itself (``train.Trainer``): every process runs its share of every batch; the stop
    decision is summed over all of them each step; rank 0 alone writes checkpoints, logs and the
    progress bar."""
    import os
    import random

    import torch

    from mmdesc import checkpoint, devices
    from mmdesc.distributed import Processes

    processes = processes or Processes()
    say = say if processes.main else _quiet
    cfg = recipe.train
    device = training_device(cfg.device, processes)
    if cfg.batch_size < processes.world * cfg.accumulate:
        raise ConfigError(f"train.batch_size: {cfg.batch_size} pairs cannot be shared by {processes.world} "
                          f"processes x train.accumulate={cfg.accumulate} micro-batches")
    if processes.many and getattr(recipe.encoder, "unfreeze_at", 0):
        raise ConfigError("encoder.unfreeze_at: not with several processes (DistributedDataParallel fixes "
                          "the parameters that train when it starts); use finetune instead")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(cfg.threads or max(1, cores // processes.local_world))
    random.seed(recipe.seed)
    torch.manual_seed(recipe.seed)

    setup_data(recipe, say, processes)
    ckpts = checkpoint.list_checkpoints(Path(recipe.out)) if resume else []
    last = ckpts[-1] if ckpts else None
    reader, tokenizer, train_ex = setup_vocabulary(recipe, say, processes, last)
    train_ex, pairs, ex_lengths, valid, valid_index = setup_examples(recipe, say, processes, reader, tokenizer,
                                                                     train_ex)
    dataset, collate, lengths = setup_inputs(recipe, reader, tokenizer, train_ex, pairs, ex_lengths)
    model = setup_model(recipe, reader, tokenizer, device, processes, pretrained=last is None, say=say)
    seed_process(recipe.seed, processes.rank)
    optimizer, schedule, scaler = setup_optimizer(recipe, model, device)
    progress = setup_restore(recipe, say, processes, last, model, optimizer, schedule, scaler, trim_log=resume)
    if cfg.cache_features:  # the frozen encoder's features (rank 0 computes what is missing), not the media
        processes.main_only(lambda: cache_features(recipe, model.encoder, reader, train_ex, device, say) and None)
        dataset, collate = cached_training_data(recipe, model, reader, train_ex, pairs, device, say,
                                                truth=dataset.truth)
    net = setup_parallel(model, device, processes)
    precision = devices.training_precision(cfg.precision, str(device))
    return TrainingParts(recipe=recipe, processes=processes, device=device, precision=precision,
                         reader=reader, tokenizer=tokenizer, dataset=dataset, collate=collate, lengths=lengths,
                         targets=[len(y) + 1 for _, y in pairs], valid=valid, valid_index=valid_index,
                         model=model, net=net, objective=build_objective(recipe), optimizer=optimizer,
                         schedule=schedule, scaler=scaler, progress=progress, resumed_from=last)


def _quiet(_: str) -> None:
    pass


def training_device(name: str, processes):
    """The device of this process: ``auto`` is cuda when there is one; with several processes on
    a machine, each trains on its own GPU (LOCAL_RANK)."""
    import torch

    from mmdesc import devices

    kind = devices.resolve(name)
    if not kind.startswith("cuda") or processes.local_world == 1:
        return torch.device(kind)
    if ":" in kind:
        raise ConfigError(f"train.device: {kind} names one GPU, but {processes.local_world} processes on this "
                          f"machine need one each: use cuda or auto")
    if torch.cuda.device_count() < processes.local_world:
        raise ConfigError(f"train.device: {processes.local_world} processes on this machine need a GPU each; "
                          f"it has {torch.cuda.device_count()}")
    return torch.device("cuda", processes.local_rank)


def seed_process(seed: int, rank: int) -> None:
    """Processes other than rank 0 draw from random streams of their own (dropout differs
    between shards); rank 0 keeps the stream a one-process run has."""
    import random

    import torch

    if rank > 0:
        random.seed(seed * 1_000_003 + rank)
        torch.manual_seed(seed * 1_000_003 + rank)


def setup_data(recipe, say, processes) -> None:
    """Rank 0: the synthetic corpus generated where it is missing, every split's paths checked;
    the others wait (``data.root`` must be one folder that every machine of the run sees)."""
    def prepare() -> None:
        ensure_data(recipe, say)
        check_data(recipe)

    processes.main_only(prepare)


def setup_vocabulary(recipe, say, processes, last: Path | None):
    """The reader (fitted: e.g. feature statistics) and the tokenizer, fitted by rank 0 on the
    train split or taken from the checkpoint ``last``; the others take rank 0's. Returns them
    and the train split's examples."""
    from mmdesc import checkpoint, runfolder
    from mmdesc.tokenize import Tokenizer

    reader, train_ex = build_reader(recipe), read_split(recipe, "train")

    def fit():
        if last is not None:
            meta = checkpoint.read_meta(last)
            runfolder.reconcile(meta.get("recipe", {}), recipe, say)
            reader.load_state(meta.get("reader", {}))
            return reader, Tokenizer.from_dict(meta["tokenizer"])
        fit_reader(recipe, reader, train_ex)  # transfer: encoder.init_from's reader state
        return reader, build_tokenizer(recipe, train_ex)

    if not processes.many:
        reader, tokenizer = fit()
        return reader, tokenizer, train_ex
    state, vocab = processes.main_only(lambda: (lambda r, t: (r.state(), t.to_dict()))(*fit()))
    if not processes.main:
        reader.load_state(state)
    return reader, Tokenizer.from_dict(vocab), train_ex


def setup_examples(recipe, say, processes, reader, tokenizer, train_ex):
    """Rank 0 probes every train input (decodes it with ``train.check_data: full``): the usable
    examples and their lengths; every process tokenizes the (example, reference) pairs and
    loads its share of the valid split (every world-th example from its rank on).

    Returns (train examples, pairs, example lengths, valid ``Loaded``, valid indices)."""
    from mmdesc.data import load_all, make_pairs, probe_all

    cfg = recipe.train

    def probe():
        kept, lengths, failures = probe_all(reader, train_ex, full=cfg.check_data == "full")
        report_bad(cfg, say, "train", len(train_ex), failures)
        if not kept:
            raise DataError("no usable train inputs")
        keep = set(id(ex) for ex in kept)
        return [i for i, ex in enumerate(train_ex) if id(ex) in keep], lengths

    index, lengths = processes.main_only(probe)
    train_ex = [train_ex[i] for i in index]
    pairs = make_pairs(train_ex, tokenizer, recipe.data.max_target_words)

    valid_ex = read_split(recipe, "valid")[: cfg.valid_size]
    mine = list(range(processes.rank, len(valid_ex), processes.world))
    loaded = load_all(reader, [valid_ex[i] for i in mine])
    kept = set(id(ex) for ex in loaded.examples)
    valid_index = [i for i in mine if id(valid_ex[i]) in kept]
    failures = loaded.failures if not processes.many else [  # as text: a MediaError does not pickle
        f for part in processes.gather([str(f) for f in loaded.failures]) for f in part]
    usable = sum(processes.gather(len(loaded.items)))

    def check_valid() -> None:
        report_bad(cfg, say, "valid", len(valid_ex), failures)
        if not usable:
            raise DataError("no usable valid inputs")

    processes.main_only(check_valid)
    return train_ex, pairs, lengths, loaded, valid_index


def report_bad(cfg, say, split: str, total: int, failures: list) -> None:
    """Inputs of ``split`` that cannot be read: a DataError naming the first ten, or with
    ``train.skip_bad`` a line saying they are left out."""
    if not failures:
        return
    shown = "\n".join(f"  {e}" for e in failures[:10])
    more = f"\n  ... and {len(failures) - 10} more" if len(failures) > 10 else ""
    if not cfg.skip_bad:
        raise DataError(f"{len(failures)} of {total} {split} inputs cannot be read:\n"
                        f"{shown}{more}\n(train.skip_bad=true trains on the rest)")
    say(f"skipping {len(failures)} unreadable {split} inputs:\n{shown}{more}")


def setup_inputs(recipe, reader, tokenizer, train_ex, pairs, ex_lengths):
    """What the training batches are made of: the dataset of (input, target ids) pairs, which
    decodes an input when a batch asks for it, the collate function, and each pair's sort key
    for length bucketing (input length, then target length with ``train.bucket: input+target``).
    With ``loss.attention_truth`` each pair carries where its target's words are (mmdesc/truth.py).

    A cached-feature run replaces this step: its dataset reads each input's encoder output
    from the cache (no decoding, no encoder in the step), the rest of the run is the same."""
    from mmdesc.data import Collate, Pairs

    by_target = recipe.train.bucket == "input+target"
    lengths = [ex_lengths[i] * 1000 + (len(y) if by_target else 0) for i, y in pairs]  # sort keys
    truth = None
    if recipe.loss.attention_truth > 0:
        from mmdesc.truth import piece_regions

        truth = [piece_regions(train_ex[i].meta, tokenizer, ids) for i, ids in pairs]
        if not any(truth):  # e.g. a speech recipe pointed at LibriSpeech: train, and say so
            import warnings

            from mmdesc.errors import MmdescWarning

            warnings.warn("loss.attention_truth: no training example of this corpus says where its words are "
                          "(word spans or regions): the term is left out", MmdescWarning, stacklevel=2)
            truth = None
    return Pairs(reader, train_ex, pairs, augment_seed=recipe.seed, truth=truth), Collate(reader), lengths


def setup_model(recipe, reader, tokenizer, device, processes, pretrained: bool = True, say=print):
    """The recipe's model on ``device`` (``pretrained=False``: its weights will come from a
    checkpoint). With several processes on CUDA, BatchNorm computes its statistics over the
    whole batch (SyncBatchNorm; on CPU each process normalizes over its own share)."""
    import torch

    model = build_model(recipe, reader, tokenizer, pretrained=pretrained, say=say)
    if processes.many and device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(device)
    model.decoder.fuse_attention(recipe.train.compile)
    return model


def setup_optimizer(recipe, model, device):
    """AdamW (weight decay on matrices only) over the parameters that train, its learning-rate
    schedule, and fp16's grad scaler (None for fp32 and bf16)."""
    import torch

    from mmdesc.train import Budget, lr_lambda

    cfg = recipe.train
    opt = torch.optim.AdamW(param_groups(recipe, model), lr=cfg.lr)  # the backbone's own group (transfer)
    budget = Budget() if cfg.anneal == "time" else None
    factor = lr_lambda(cfg.schedule, cfg.warmup, cfg.max_steps, budget)
    factor.budget = budget  # the Trainer keeps it up to date (a function's attributes are not in state_dict)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    scaler = torch.amp.GradScaler(device.type) if cfg.precision == "fp16" else None
    return opt, sched, scaler


def setup_restore(recipe, say, processes, last: Path | None, model, opt, sched, scaler, trim_log: bool = True):
    """The state of checkpoint ``last`` put back (weights, optimizer, schedule, grad scaler,
    progress, and this process's own RNG state), or a fresh ``Progress``. Rank 0 trims the log
    to the checkpoint's step: the steps after it are trained, and logged, again."""
    from mmdesc import checkpoint, runfolder
    from mmdesc.errors import MmdescError
    from mmdesc.train import Progress

    progress = Progress()
    if last is not None:
        checkpoint.load_weights(last, model)
        state = checkpoint.load_train_state(last)
        if state is None:
            raise MmdescError(f"{last}: has no training state to resume from")
        tensors, info = state
        try:
            checkpoint.unpack_optimizer(opt, tensors, info["optimizer"])
            sched.load_state_dict(info["scheduler"])
            if scaler is not None and isinstance(info.get("scaler"), dict):
                scaler.load_state_dict(info["scaler"])
            restore_rng(tensors, info["rng"], processes.rank)
            progress = Progress(**info["progress"])
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise MmdescError(f"{last}: its training state does not fit this run ({str(e)[:100]})") from None
        runfolder.resume_lr(opt, sched, recipe.train.lr)
        saved = info.get("processes", 1)
        if saved != processes.world:
            say(f"{last} was written by {saved} process{'es' if saved != 1 else ''}, this run has "
                f"{processes.world}: the batches are the same, the random streams of the new ones start afresh")
        say(f"resuming from {last} (step {progress.step})")
    if trim_log and processes.main:
        runfolder.trim_log(Path(recipe.out) / runfolder.LOG, progress.step)
    return progress


def restore_rng(tensors: dict, info: dict, rank: int) -> None:
    """Rank ``rank``'s RNG state from a checkpoint's training state (rank 0's under ``rng.``,
    rank r's under ``rankR.rng.``); a rank the checkpoint has none for keeps its fresh seed."""
    from mmdesc import checkpoint

    prefix = "" if rank == 0 else f"rank{rank}."
    mine = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix + "rng.")}
    python = info if rank == 0 else info.get(f"rank{rank}")
    if mine and isinstance(python, dict):
        checkpoint.unpack_rng(mine, python)


def setup_parallel(model, device, processes):
    """The model as the training steps run it: wrapped in DistributedDataParallel when the run
    has several processes (which also makes every process start from rank 0's weights)."""
    if not processes.many:
        return model
    from mmdesc.distributed import Parallel

    with processes.talking():
        return Parallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def ensemble(members: list[Trained], attention: str | int = "mean") -> Trained:
    """One Trained that decodes with all ``members`` at once (``mmdesc.ensemble``): the first
    gives the reader, tokenizer, recipe (its search settings) and path. The members must
    be of one modality, share the tokenizer and read inputs the same way (input settings and
    reader state); otherwise one ``CheckpointError`` line. ``attention``: "mean" or the index of
    the member whose attention is shown."""
    from mmdesc.ensemble import ensemble_model
    from mmdesc.errors import CheckpointError

    first = members[0]
    for m in members[1:]:
        if m.modality != first.modality:
            why = f"its modality is {m.modality}, {first.path}'s is {first.modality}"
        elif m.tokenizer.to_dict() != first.tokenizer.to_dict():
            why = f"its tokenizer differs from {first.path}'s; an ensemble's models must share one"
        elif asdict(m.recipe.input) != asdict(first.recipe.input) or m.reader.state() != first.reader.state():
            why = f"it reads inputs differently from {first.path} (input settings or the reader's state)"
        else:
            continue
        raise CheckpointError(f"{m.path}: cannot join an ensemble: {why}")
    model = ensemble_model([m.model for m in members], attention)
    meta = {**first.meta, "ensemble": [str(m.path) for m in members]}
    return Trained(model, first.reader, first.tokenizer, first.recipe, meta, first.path)
