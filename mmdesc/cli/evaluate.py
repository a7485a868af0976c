"""mmdesc evaluate --checkpoint DIR [--split test]"""
from __future__ import annotations

import json
import sys

import click

from mmdesc.alignment import LABELS as ATTENTION_LABELS
from mmdesc.cli.common import ensemble_options, join_ensembles, resolve_search, search_options, writable_file

LABELS = {"bleu1": "BLEU-1", "bleu2": "BLEU-2", "bleu3": "BLEU-3", "bleu4": "BLEU-4", "chrf": "chrF",
          "cider_d": "CIDEr-D", "rouge_l": "ROUGE-L", "grounding": "grounding (% shape words)", "aer": "AER (%)",
          "align_precision": "alignment precision", "align_recall": "alignment recall",
          "wer": "WER (%)", "cer": "CER (%)", "substitutions": "substitutions", "deletions": "deletions",
          "insertions": "insertions", "time_alignment": "time alignment (% words)",
          "backward_steps": "backward attention steps, reading the reference (%)",
          "chair_i": "CHAIR-i (% named objects not there)", "chair_s": "CHAIR-s (% captions inventing one)",
          "count_accuracy": "count accuracy (%)", "object_recall": "object recall (%)",
          "attribute_accuracy": "attribute accuracy (%)", "shape_accuracy": "  shape", "colour_accuracy": "  colour",
          "size_accuracy": "  size", "relation_accuracy": "relation accuracy (%)",
          **{k: f"attention {v}" for k, v in ATTENTION_LABELS.items()}}
COCO_LABELS = {"coco_bleu1": "BLEU-1", "coco_bleu2": "BLEU-2", "coco_bleu3": "BLEU-3", "coco_bleu4": "BLEU-4",
               "coco_meteor": "METEOR", "coco_rouge_l": "ROUGE-L", "coco_cider_d": "CIDEr-D"}
REPLACED_BY_COCO = ("bleu1", "bleu2", "bleu3", "bleu4", "cider_d", "rouge_l")  # not shown twice


@click.command("evaluate")
@click.argument("data_overrides", nargs=-1, metavar="[data.KEY=VALUE]...")
@click.option("--checkpoint", "-c", required=True, help="Checkpoint or run folder.")
@click.option("--split", type=click.Choice(["test", "valid", "train", "test_shift"]), default="test", show_default=True,
              help="test_shift: the test split drawn outside the training ranges, where the recipe names one.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Score only the first N inputs.")
@search_options
@ensemble_options
@click.option("--scorer", type=click.Choice(["default", "coco"]), default="default", show_default=True,
              help="coco: BLEU-1..4, METEOR, ROUGE-L and CIDEr-D as the COCO caption evaluation computes "
                   "them (PTB tokenization; pip install 'mmdesc[coco]', METEOR and the tokenizer need Java), "
                   "x100 as papers print them.")
@click.option("--json", "as_json", is_flag=True, help="Print the scores as one JSON object.")
@click.option("--hypotheses", type=click.Path(dir_okay=False), default=None, help="Also write the best hypotheses here, one per line.")
def command(data_overrides, checkpoint, split, limit, search, device, ensemble, scorer, as_json, hypotheses) -> None:
    """Score a trained model on a split of the corpus its recipe names, or on any split in
    a format the modality reads, given as ``data.*`` overrides of the recipe, e.g.

      mmdesc evaluate -c runs/image data.root=/coco data.test.format=karpathy \\
          data.test.captions=dataset_coco.json data.test.images=. data.test.split=test

    Reports BLEU-1..4 and chrF (sacrebleu, with their signatures), CIDEr-D and ROUGE-L
    (``--scorer coco``: BLEU-1..4, METEOR, ROUGE-L and CIDEr-D of the COCO caption
    evaluation instead, each with what computed it, or why it could not); where the
    corpus has ground truth for attention, also the grounding of shape words in images
    (% whose most attended cell lies in the object's box) and the alignment error rate
    of the attention for translation (argmax per target word, reading the reference),
    and how the attention spreads: entropy, peak mass, coverage and, over sequences, the
    share of backward steps and the mean jump (see mmdesc.alignment); where it knows the
    objects of each input, also CHAIR-i/CHAIR-s (named objects that are not there), count
    accuracy, object recall, attribute and relation accuracy; for inputs with word time
    spans (speech), the share of words whose attention's centre of mass lies in the word's
    span and the share of steps where it moves back, reading the reference. WER and CER
    (jiwer, against the first reference) come with substitutions, deletions, insertions.

    Inputs that cannot be read are skipped with a warning; the scores of the others are
    printed and the exit code is 2 (no usable input at all: an error, nothing scored).
    """
    import time

    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from mmdesc.build import load_trained, read_split, use_search
    from mmdesc.data import load_all
    from mmdesc.evaluate import score

    from mmdesc.errors import DataError

    writable_file(hypotheses, "--hypotheses")
    model, = join_ensembles([load_trained(checkpoint, device)], ensemble, device)
    if data_overrides:
        model.recipe = with_data(model.recipe, data_overrides)
    examples = read_split(model.recipe, split)[:limit]
    loaded = load_all(model.reader, examples)
    for e in loaded.failures:
        click.echo(f"warning: skipped {e}", err=True)
    if not loaded.items:
        raise DataError(f"{split} split: none of its {len(examples)} inputs can be read; nothing to score")
    s = resolve_search(model.recipe.search, search)
    kwargs = {k: v for k, v in use_search(model, s).items() if k != "n_best"}
    start = time.perf_counter()
    with Progress(transient=True, disable=not sys.stderr.isatty()) as bar:
        task = bar.add_task(f"evaluate {split}", total=len(loaded.items))
        result, hyps = score(model, loaded, batch_size=s.batch_size, progress=lambda n: bar.advance(task, n), **kwargs)
    if scorer == "coco":
        from mmdesc.cocoeval import coco_scores

        result.update(coco_scores(hyps, [ex.references for ex in loaded.examples]))
    seconds = time.perf_counter() - start
    result.update({"split": split, "n": len(loaded.items), "skipped": len(loaded.failures),
                   "beam": s.beam, "seconds": round(seconds, 2),
                   "items_per_second": round(len(loaded.items) / seconds, 1), "checkpoint": str(model.path)})
    if "ensemble" in model.meta:
        result["ensemble"] = model.meta["ensemble"]
    if hypotheses:
        with open(hypotheses, "w", encoding="utf-8") as f:
            f.write("".join(h + "\n" for h in hyps))
    if as_json:
        click.echo(json.dumps(result, indent=1))
        _fail_if_skipped(loaded, examples)
        return
    name = " + ".join(model.meta.get("ensemble", [str(model.path)]))
    how = "sampling" if s.sample else f"beam {s.beam}"
    table = Table(title=f"{name} on {split} ({len(loaded.items)} inputs, {how})")
    table.add_column("metric")
    table.add_column("score", justify="right")
    coco = scorer == "coco"
    if coco:
        table.add_column("computed by")
        for key, label in COCO_LABELS.items():
            value = result[key]
            table.add_row(f"{label} (COCO)", "n/a" if value is None else f"{value:.2f}", result["coco_notes"][key])
    for key, label in LABELS.items():
        if key in result and not (coco and key in REPLACED_BY_COCO):
            value = result[key]
            table.add_row(label, str(value) if isinstance(value, int) else f"{value:.2f}")
    console = Console()
    console.print(table)
    if coco:
        console.print(f"COCO scores x100, captions tokenized by {result['coco_tokenizer']}", highlight=False,
                      soft_wrap=True)
    for key in ("chrf_signature",) if coco else ("bleu_signature", "chrf_signature"):
        if key in result:
            console.print(f"{key.split('_')[0]}: {result[key]}", highlight=False)
    console.print(f"{result['items_per_second']} inputs/s ({seconds:.1f} s)", highlight=False)
    _fail_if_skipped(loaded, examples)


def _fail_if_skipped(loaded, examples) -> None:
    if loaded.failures:
        click.echo(f"{len(loaded.failures)} of {len(examples)} inputs could not be read and were not scored",
                   err=True)
        raise SystemExit(2)


def with_data(recipe, overrides: tuple[str, ...]):
    """``recipe`` with ``data.*`` overrides put over its data section (checked like a recipe)."""
    from mmdesc.config import apply_overrides, recipe_from_dict, recipe_to_dict
    from mmdesc.errors import ConfigError

    bad = [o for o in overrides if not o.startswith("data.")]
    if bad:
        raise ConfigError([f"{o}: evaluate takes data.* overrides only" for o in bad])
    errors: list[str] = []
    d = recipe_to_dict(recipe)
    d["data"]["synth"] = None  # an other corpus is never generated
    d = apply_overrides(d, overrides, errors)
    if errors:
        raise ConfigError(errors)
    return recipe_from_dict(d)
