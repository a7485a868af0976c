"""The CLI end to end, on generated media: what a user sees."""
import json
import os
import shutil
import subprocess
import sys

from PIL import Image

from conftest import RECIPES, mmdesc, needs_cxx


def test_help_does_not_import_torch():
    code = "import sys; from mmdesc.cli import cli; cli.main(['--help'], standalone_mode=False); " \
           "sys.exit(3 if 'torch' in sys.modules else 0)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, "mmdesc --help imported torch"
    assert "describe" in r.stdout and "train" in r.stdout


def test_train_writes_best_checkpoints_and_log(tiny_image_run):
    assert (tiny_image_run / "best" / "model.safetensors").exists()
    assert list(tiny_image_run.glob("ckpt-*"))
    log = [json.loads(line) for line in (tiny_image_run / "metrics.jsonl").read_text().splitlines()]
    assert any("valid" in rec for rec in log) and any("loss" in rec for rec in log)


def test_describe_prints_a_caption_and_draws_attention(tiny_image_run, tiny_data, tmp_path):
    img = tiny_data / "images" / "test_000000.png"
    r = mmdesc("describe", img, "--checkpoint", tiny_image_run, "--attention", tmp_path / "att")
    assert r.code == 0, r.err
    path, caption = r.out.strip().split("\t")
    assert path == str(img) and caption.strip()
    pic = Image.open(tmp_path / "att" / "test_000000.png")
    assert pic.width > 64 and pic.height > 64


def test_describe_json_n_best(tiny_image_run, tiny_data):
    img = tiny_data / "images" / "test_000001.png"
    r = mmdesc("describe", img, "-c", tiny_image_run, "--beam", 3, "--n-best", 3, "--json")
    assert r.code == 0, r.err
    rec = json.loads(r.out)[0]
    scores = [h["score"] for h in rec["hypotheses"]]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True)
    h = rec["hypotheses"][0]
    assert len(h["attention"]) == len(h["words"]) and len(h["attention"][0]) == 16  # 4x4 grid


def test_describe_goes_on_after_bad_files(tiny_image_run, tiny_data, tmp_path):
    bad = tmp_path / "corrupt.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    good = tiny_data / "images" / "test_000002.png"
    r = mmdesc("describe", bad, good, empty, "-c", tiny_image_run)
    assert r.code == 2
    assert r.out.startswith(f"{good}\t") and len(r.out.strip().splitlines()) == 1
    assert str(bad) in r.err and str(empty) in r.err and "2 of 3 files failed" in r.err
    assert "Traceback" not in r.err


def test_describe_a_folder(tiny_image_run, tiny_data, tmp_path):
    for k in range(3):
        (tmp_path / f"{k}.png").write_bytes((tiny_data / "images" / f"test_00000{k}.png").read_bytes())
    r = mmdesc("describe", tmp_path, "-c", tiny_image_run)
    assert r.code == 0 and len(r.out.strip().splitlines()) == 3


@needs_cxx
def test_describe_compile_gives_the_same_captions(tiny_image_run, tiny_data, monkeypatch):
    """--compile swaps in the fused attention score; what the user reads stays the same."""
    from mmdesc.decoder import attention

    calls, compiled = [], attention.fused_score
    monkeypatch.setattr(attention, "fused_score", lambda *a: calls.append(1) or compiled(*a))
    imgs = [tiny_data / "images" / f"test_{i:06d}.png" for i in range(6)]
    plain = mmdesc("describe", *imgs, "-c", tiny_image_run, "--json")
    assert not calls
    fused = mmdesc("describe", *imgs, "-c", tiny_image_run, "--json", "--compile")
    assert plain.code == fused.code == 0, fused.err
    assert calls and attention._compiled not in (None, False)
    texts = [[h["text"] for h in r["hypotheses"]] for r in json.loads(plain.out)]
    assert texts == [[h["text"] for h in r["hypotheses"]] for r in json.loads(fused.out)]


def test_compile_without_a_cxx_compiler_warns_once_and_still_describes(tiny_image_run, tiny_data, tmp_path):
    img = tiny_data / "images" / "test_000003.png"
    plain = mmdesc("describe", img, "-c", tiny_image_run)
    env = dict(os.environ, CXX=str(tmp_path / "no-such-g++"), TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "cache"))
    r = subprocess.run([sys.executable, "-m", "mmdesc", "describe", str(img), "-c", str(tiny_image_run), "--compile"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout == plain.out
    warned = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert len(warned) == 1 and "cannot compile the fused attention score" in warned[0], r.stderr


def test_evaluate_reports_text_metrics_and_grounding(tiny_image_run, tiny_data):
    r = mmdesc("evaluate", "-c", tiny_image_run, "--json")
    assert r.code == 0, r.err
    res = json.loads(r.out)
    for key in ("bleu1", "bleu4", "chrf", "cider_d", "grounding", "grounding_n"):
        assert key in res
    assert res["n"] == 6 and res["grounding_n"] >= 0  # a 12-step model may name no shape at all
    table = mmdesc("evaluate", "-c", tiny_image_run)
    assert "BLEU-4" in table.out and "CIDEr-D" in table.out and "grounding" in table.out


def test_recipe_typo_is_one_clear_error(tmp_path):
    r = mmdesc("train", RECIPES / "tiny" / "image.yaml", "decoder.hiden=5", "train.lr=fast", f"out={tmp_path}")
    assert r.code == 2
    assert "decoder.hiden" in r.err and "did you mean 'hidden'" in r.err and "train.lr" in r.err
    assert "Traceback" not in r.err and not any(tmp_path.iterdir())


def test_missing_checkpoint_is_one_clear_error(tmp_path):
    r = mmdesc("describe", "x.png", "-c", tmp_path / "nope")
    assert r.code == 2 and "no such checkpoint" in r.err and "Traceback" not in r.err


def test_train_resumes_from_the_last_checkpoint(tiny_image_run, tiny_data, copy_run):
    run = copy_run(tiny_image_run)
    r = mmdesc("train", RECIPES / "tiny" / "image.yaml", f"data.root={tiny_data}", f"out={run}",
               "train.max_steps=18")
    assert r.code == 0, r.err
    assert "resuming from" in r.err and "step 12" in r.err
    assert (run / "ckpt-0000018").exists()


def test_missing_data_files_are_all_reported_before_training(tmp_path):
    r = mmdesc("train", RECIPES / "tiny" / "image.yaml", "data.synth=null", f"data.root={tmp_path}",
               "data.train.captions=nope.json", "data.valid.images=nowhere", f"out={tmp_path / 'run'}")
    assert r.code == 2 and "Traceback" not in r.err
    assert "data.train.captions" in r.err and "nope.json" in r.err and "data.valid.images" in r.err
    assert "data.test.captions" in r.err  # every missing path at once
    assert not (tmp_path / "run").exists()


def test_describe_a_folder_names_pictures_by_path(tiny_image_run, tiny_data, tmp_path):
    """a/x.png and b/x.png get a picture each; x.png beside x.jpg keeps its suffix."""
    src = tiny_data / "images"
    for sub, name in (("a", "x.png"), ("b", "x.png"), ("b", "y.png")):
        (tmp_path / "in" / sub).mkdir(parents=True, exist_ok=True)
        shutil.copy(src / f"test_00000{len(name)}.png", tmp_path / "in" / sub / name)
    Image.open(src / "test_000001.png").save(tmp_path / "in" / "b" / "y.jpg")
    r = mmdesc("describe", tmp_path / "in", "-c", tiny_image_run, "--attention", tmp_path / "att")
    assert r.code == 0, r.err
    assert len(r.out.strip().splitlines()) == 4
    pictures = sorted(str(p.relative_to(tmp_path / "att")) for p in (tmp_path / "att").rglob("*.png"))
    assert pictures == ["a/x.png", "b/x.png", "b/y.png", "b/y.png.png"]  # y.jpg comes first: it is y.png


def test_evaluate_any_split_in_a_public_format(tiny_image_run, tiny_data, tmp_path):
    """A split the recipe never named, in the Karpathy and the Flickr formats, given on the command line."""
    coco = json.loads((tiny_data / "captions_test.json").read_text())
    caps = {}
    for a in coco["annotations"]:
        caps.setdefault(a["image_id"], []).append(a["caption"])
    images = [im for im in coco["images"]][:4]
    karpathy = {"images": [{"filename": im["file_name"], "imgid": im["id"], "split": "test" if k < 3 else "val",
                            "sentences": [{"raw": c} for c in caps[im["id"]]]} for k, im in enumerate(images)]}
    (tmp_path / "dataset_x.json").write_text(json.dumps(karpathy))
    r = mmdesc("evaluate", "-c", tiny_image_run, "--json", f"data.root={tmp_path}", "data.test.format=karpathy",
               "data.test.captions=dataset_x.json", f"data.test.images={tiny_data / 'images'}", "data.test.split=test")
    assert r.code == 0, r.err
    assert json.loads(r.out)["n"] == 3
    (tmp_path / "tokens.txt").write_text("".join(f"{im['file_name']}#{j}\t{c}\n" for im in images
                                                 for j, c in enumerate(caps[im["id"]])))
    (tmp_path / "list.txt").write_text(images[0]["file_name"] + "\n" + images[1]["file_name"] + "\n")
    r = mmdesc("evaluate", "-c", tiny_image_run, "--json", f"data.root={tmp_path}", "data.test.format=flickr",
               "data.test.captions=tokens.txt", f"data.test.images={tiny_data / 'images'}",
               "data.test.image_list=list.txt")
    assert r.code == 0, r.err
    assert json.loads(r.out)["n"] == 2
    r = mmdesc("evaluate", "-c", tiny_image_run, "data.test.format=karpathy", "train.lr=1")
    assert r.code == 2 and "train.lr=1: evaluate takes data.* overrides only" in r.err


def test_coverage_attention_trains_resumes_and_describes_through_the_cli(tiny_data, tmp_path):
    """``decoder.attention=coverage``: the coverage weight trains, is saved, and beam search
    carries each hypothesis' coverage (the n-best attention sums to one per word)."""
    from safetensors.torch import load_file

    out = tmp_path / "cov"
    r = mmdesc("train", RECIPES / "tiny" / "image.yaml", f"data.root={tiny_data}", f"out={out}",
               "decoder.attention=coverage", "train.max_steps=8")
    assert r.code == 0, r.err
    weights = load_file(out / "best" / "model.safetensors")
    assert weights["decoder.att.cover.weight"].abs().sum() > 0  # it trained away from its start
    r = mmdesc("train", RECIPES / "tiny" / "image.yaml", f"data.root={tiny_data}", f"out={out}",
               "decoder.attention=coverage", "train.max_steps=12")
    assert r.code == 0, r.err
    assert (out / "ckpt-0000012").is_dir()  # resumed at step 8 with its coverage weights
    img = tiny_data / "images" / "test_000003.png"
    r = mmdesc("describe", img, "-c", out, "--beam", 3, "--n-best", 2, "--json")
    assert r.code == 0, r.err
    hyps = json.loads(r.out)[0]["hypotheses"]
    assert len(hyps) == 2 and all(h["words"] for h in hyps)
    for h in hyps:
        assert len(h["attention"]) == len(h["words"])
        assert all(abs(sum(row) - 1.0) < 1e-3 for row in h["attention"])
    r = mmdesc("train", RECIPES / "tiny" / "image.yaml", f"data.root={tiny_data}", f"out={tmp_path / 'bad'}",
               "decoder.attention=coverag")
    assert r.code == 2 and "decoder.attention" in r.err and "coverage" in r.err
