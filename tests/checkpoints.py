"""Checkpoints for tests that need one unlike a trained run's: an untrained model of the run's
recipe with some sections changed, saved as mmdesc saves any checkpoint."""
from pathlib import Path


def variant(run: Path, out: Path, changes: dict) -> Path:
    """An untrained checkpoint at ``out`` of ``run``'s recipe with ``changes`` ({section: {key: value}})."""
    from mmdesc import build, checkpoint
    from mmdesc.config import recipe_from_dict, recipe_to_dict

    d = recipe_to_dict(build.load_trained(run).recipe)
    for section, values in changes.items():
        d[section].update(values)
    recipe = recipe_from_dict(d)
    reader = build.build_reader(recipe)
    examples = build.read_split(recipe, "train")
    reader.fit(examples)
    tokenizer = build.build_tokenizer(recipe, examples)
    model = build.build_model(recipe, reader, tokenizer, pretrained=False)
    return checkpoint.save(out, model, build.checkpoint_meta(recipe, reader, tokenizer, step=0))
