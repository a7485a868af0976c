"""Translation through the real CLI: arguments, streaming stdin, empty and over-long lines."""
import json

from conftest import RECIPES, mmdesc, needs_cxx


def test_translate_arguments_and_json(tiny_text_run):
    r = mmdesc("translate", "-c", tiny_text_run, "a small red circle", "a large blue star")
    assert r.code == 0, r.err
    assert len(r.out.splitlines()) == 2
    r = mmdesc("translate", "-c", tiny_text_run, "--json", "--n-best", 2, "a red circle")
    rec = json.loads(r.out)
    assert rec["source"] == "a red circle" and len(rec["hypotheses"]) == 2
    h = rec["hypotheses"][0]
    assert len(h["attention"]) == len(h["words"])
    assert rec["source_tokens"][-1] == "</s>"
    assert all(len(row) == len(rec["source_tokens"]) for row in h["attention"])


def test_stdin_line_by_line_with_empty_and_long_lines(tiny_text_run):
    long_line = " ".join(["a small red circle to the left of a large blue square"] * 40)
    r = mmdesc("translate", "-c", tiny_text_run, input=f"a red circle\n\n{long_line}\na green star\n")
    assert r.code == 0, r.err
    lines = r.out.split("\n")
    assert len(lines) == 5 and lines[1] == "" and lines[4] == ""  # 4 outputs, the empty one empty
    assert lines[0] and lines[3]
    assert "warning" in r.err and "truncat" in r.err
    assert "Traceback" not in r.err


def test_translate_draws_alignment_matrices(tiny_text_run, tmp_path):
    r = mmdesc("translate", "-c", tiny_text_run, "--attention", tmp_path, "a red circle", "a blue cross")
    assert r.code == 0, r.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00001.png", "00002.png"]


def test_translate_refuses_an_image_model(tiny_image_run):
    r = mmdesc("translate", "-c", tiny_image_run, "a red circle")
    assert r.code == 2 and "cannot translate" in r.err


def test_evaluate_translation_reports_bleu_signature_and_aer(tiny_text_run):
    r = mmdesc("evaluate", "-c", tiny_text_run, "--json")
    assert r.code == 0, r.err
    res = json.loads(r.out)
    assert {"bleu4", "chrf", "aer", "bleu_signature"} <= set(res) and 0 <= res["aer"] <= 100
    assert "nrefs:1" in res["bleu_signature"] or "nrefs:var" in res["bleu_signature"]
    table = mmdesc("evaluate", "-c", tiny_text_run)
    assert "AER" in table.out and "bleu: nrefs" in table.out


@needs_cxx
def test_translate_and_evaluate_compile_change_nothing_the_user_reads(tiny_text_run):
    text = "a small red circle\na large blue star above a small green cross\n"
    plain = mmdesc("translate", "-c", tiny_text_run, input=text)
    fused = mmdesc("translate", "-c", tiny_text_run, "--compile", input=text)
    assert plain.code == fused.code == 0, fused.err
    assert fused.out == plain.out and len(fused.out.splitlines()) == 2
    scores = [json.loads(mmdesc("evaluate", "-c", tiny_text_run, "--json", *flag).out)
              for flag in ((), ("--compile",))]
    assert scores[0]["bleu4"] == scores[1]["bleu4"] and scores[0]["aer"] == scores[1]["aer"]


def test_user_parallel_files_train_without_code_changes(tmp_path):
    en = ["a red circle", "a blue square", "a green star", "a small red circle"] * 6
    fr = ["un cercle rouge", "un carré bleu", "une étoile verte", "un petit cercle rouge"] * 6
    (tmp_path / "my.en").write_text("\n".join(en) + "\n")
    (tmp_path / "my.fr").write_text("\n".join(fr) + "\n")
    (tmp_path / "pairs.tsv").write_text("".join(f"{e}\t{f}\n" for e, f in zip(en, fr)))
    r = mmdesc("train", RECIPES / "tiny" / "translate.yaml", "data.synth=null", f"data.root={tmp_path}",
               "data.train.src=my.en", "data.train.tgt=my.fr", "data.valid.tsv=pairs.tsv",
               "data.valid.src=null", "data.valid.tgt=null", "data.valid.align=null", "data.test=null",
               f"out={tmp_path / 'run'}", "train.max_steps=4", "train.valid_every=4")
    assert r.code == 0, r.err
    assert (tmp_path / "run" / "best" / "model.safetensors").exists()


def test_misaligned_parallel_files_are_reported(tmp_path):
    (tmp_path / "my.en").write_text("a red circle\na blue square\n")
    (tmp_path / "my.fr").write_text("un cercle rouge\n")
    r = mmdesc("train", RECIPES / "tiny" / "translate.yaml", "data.synth=null", f"data.root={tmp_path}",
               "data.train.src=my.en", "data.train.tgt=my.fr", "data.valid.src=my.en", "data.valid.tgt=my.fr",
               "data.valid.align=null", "data.test=null", f"out={tmp_path / 'run'}")
    assert r.code == 2 and "my.en" in r.err and "my.fr" in r.err and "Traceback" not in r.err
