"""The training loop: seeded, resumable, validated with beam search, checkpointed safely.

Resuming is exact: a checkpoint carries the weights, the optimizer and scheduler, every
RNG state and the position in the (seed, epoch)-determined batch order, so a run killed
at any point and resumed ends with the same weights as one that was never stopped.
"""
from __future__ import annotations

import json
import math
import os
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from mmdesc import build, checkpoint, runfolder
from mmdesc.data import (Batch, BucketSampler, Collate, Loaded, Pairs, load_all, loader, make_pairs, probe_all,
                         target_tensors, to_device)
from mmdesc.errors import DataError, MmdescError
from mmdesc.metrics import improved, selection_value

MAX_BAD_STEPS = 20  # consecutive non-finite losses before training gives up


class Interrupted(MmdescError):
    """Training stopped by a signal after writing a checkpoint."""

    def __init__(self, signum: int, path: Path):
        self.exit_code = 128 + signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}: checkpoint written to {path}; "
                         f"run the same command again to resume")


@dataclass
class Progress:
    """Where training stands; saved in every checkpoint."""

    step: int = 0
    epoch: int = 0
    batch: int = 0  # next batch index within the epoch
    best: float | None = None
    best_step: int = 0
    stale: int = 0  # validations without improvement
    bad_steps: int = 0  # skipped non-finite steps, in total
    history: list = field(default_factory=list)
    seconds: float = 0.0  # trained so far, over every resume (train.max_minutes counts these)


def lr_lambda(schedule: str, warmup: int, max_steps: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if schedule == "cosine":
            p = min(1.0, (step - warmup) / max(1, max_steps - warmup))
            return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * p))
        if schedule == "inverse_sqrt":
            return math.sqrt(max(1, warmup) / max(step, 1))
        return 1.0
    return f


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class Trainer:
    """Owns the model, data and optimizer of one run; ``run()`` trains to the end."""

    def __init__(self, recipe, say: Callable[[str], None] = print, resume: bool = True):
        self.recipe, self.say, self.cfg = recipe, say, recipe.train
        self.out = Path(recipe.out)
        self.device = pick_device(self.cfg.device)
        torch.set_num_threads(self.cfg.threads or os.cpu_count() or 1)
        random.seed(recipe.seed)
        torch.manual_seed(recipe.seed)
        build.ensure_data(recipe, say)
        build.check_data(recipe)
        ckpts = checkpoint.list_checkpoints(self.out) if resume else []
        last = ckpts[-1] if ckpts else None
        self.reader = build.build_reader(recipe)
        train_ex = build.read_split(recipe, "train")
        if last is not None:
            from mmdesc.tokenize import Tokenizer

            meta = checkpoint.read_meta(last)
            runfolder.reconcile(meta.get("recipe", {}), recipe, say)
            self.tokenizer = Tokenizer.from_dict(meta["tokenizer"])
            self.reader.load_state(meta.get("reader", {}))
        else:
            build.fit_reader(recipe, self.reader, train_ex)  # transfer: encoder.init_from's reader state
            self.tokenizer = build.build_tokenizer(recipe, train_ex)
        train_ex, ex_lengths = self._check("train", train_ex)
        pairs = make_pairs(train_ex, self.tokenizer, recipe.data.max_target_words)
        by_target = self.cfg.bucket == "input+target"
        self.lengths = [ex_lengths[i] * 1000 + (len(y) if by_target else 0) for i, y in pairs]  # sort keys
        self.dataset = Pairs(self.reader, train_ex, pairs, augment_seed=recipe.seed)
        self.collate = Collate(self.reader)
        valid_ex = build.read_split(recipe, "valid")[: self.cfg.valid_size]
        self.valid_data = self._load("valid", valid_ex)
        self.model = build.build_model(recipe, self.reader, self.tokenizer, pretrained=last is None,
                                       say=say).to(self.device)
        self.model.decoder.fuse_attention(self.cfg.compile)
        self.objective = build.build_objective(recipe)
        self.opt = torch.optim.AdamW(build.param_groups(recipe, self.model), lr=self.cfg.lr)  # + backbone's
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lr_lambda(self.cfg.schedule, self.cfg.warmup, self.cfg.max_steps))
        self.progress = Progress()
        if last is not None:
            self._restore(last)
        if resume:  # the steps after the checkpoint are trained, and logged, again
            runfolder.trim_log(self.out / "metrics.jsonl", self.progress.step)
        if self.cfg.cache_features:  # --- cached features: a frozen encoder's, read instead of the media
            self.dataset, self.collate = build.cached_training_data(recipe, self.model, self.reader, train_ex,
                                                                    pairs, self.device, say)
        self._signal: int | None = None
        self._bad_run = 0  # consecutive non-finite losses

    # --- data -----------------------------------------------------------------------
    def _report_bad(self, split: str, total: int, failures: list) -> None:
        if not failures:
            return
        shown = "\n".join(f"  {e}" for e in failures[:10])
        more = f"\n  ... and {len(failures) - 10} more" if len(failures) > 10 else ""
        if not self.cfg.skip_bad:
            raise DataError(f"{len(failures)} of {total} {split} inputs cannot be read:\n"
                            f"{shown}{more}\n(train.skip_bad=true trains on the rest)")
        self.say(f"skipping {len(failures)} unreadable {split} inputs:\n{shown}{more}")

    def _check(self, split: str, examples) -> tuple[list, list[int]]:
        """Every input probed up front (decoded with train.check_data=full): the usable ones and
        their lengths, before any training step."""
        kept, lengths, failures = probe_all(self.reader, examples, full=self.cfg.check_data == "full")
        self._report_bad(split, len(examples), failures)
        if not kept:
            raise DataError(f"no usable {split} inputs")
        return kept, lengths

    def _load(self, split: str, examples) -> Loaded:
        loaded = load_all(self.reader, examples)
        self._report_bad(split, len(examples), loaded.failures)
        if not loaded.items:
            raise DataError(f"no usable {split} inputs")
        return loaded

    def batch(self, indices: list[int]):
        """The collated batch of training pairs ``indices``, decoded here (tests, benchmarks)."""
        return self.collate([self.dataset[i] for i in indices])

    def _epoch(self, epoch: int, start: int):
        """The batches of ``epoch`` from batch ``start`` on, decoded by the DataLoader's workers."""
        self.dataset.epoch = epoch
        sampler = BucketSampler(self.lengths, self.cfg.batch_size, self.recipe.seed, epoch, start)
        return len(sampler) + start, loader(self.dataset, sampler, self.collate, workers=self.cfg.workers,
                                            pin_memory=self.device.type == "cuda")

    # --- one step -------------------------------------------------------------------
    def loss(self, batch: dict, inputs, outputs) -> tuple[torch.Tensor, dict]:
        """The objective's total and its named terms on one batch (already on the device)."""
        with torch.autocast(self.device.type, dtype=torch.bfloat16,
                            enabled=self.cfg.amp and self.device.type == "cuda"):
            return self.objective(self.model, batch, inputs, outputs)

    def step(self, collated: Batch) -> dict[str, float]:
        """One optimisation step on a collated batch; returns the loss and its terms."""
        self.model.train()
        c = collated
        batch, inputs, outputs = to_device(c.data, self.device), c.inputs.to(self.device), c.outputs.to(self.device)
        loss, terms = self.loss(batch, inputs, outputs)
        self.opt.zero_grad(set_to_none=True)
        if not torch.isfinite(loss):
            self.progress.bad_steps += 1
            self._bad_run += 1
            if self._bad_run >= MAX_BAD_STEPS:
                raise MmdescError(f"training diverged: {MAX_BAD_STEPS} consecutive steps had a non-finite loss "
                                  f"(try a lower train.lr or train.clip)")
            return {"loss": float("nan")}
        self._bad_run = 0
        loss.backward()
        if self.cfg.clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip)
        self.opt.step()
        self.sched.step()
        return {"loss": loss.item(), **{k: v.item() for k, v in terms.items()}}

    # --- validation -----------------------------------------------------------------
    def validate(self) -> dict:
        from mmdesc.evaluate import score

        self.model.eval()
        trained = build.Trained(self.model, self.reader, self.tokenizer, self.recipe, {}, self.out)
        if self.cfg.metric == "loss":
            result = {"loss": self._valid_loss()}
        else:
            result, _ = score(trained, self.valid_data, batch_size=self.recipe.search.batch_size,
                              alignment=False, **build.search_kwargs(self.recipe.search), attention=False)
            result = {k: v for k, v in result.items() if not k.endswith("signature")}
        self.model.train()
        return result

    @torch.no_grad()
    def _valid_loss(self) -> float:
        total, n = 0.0, 0
        for ex, item in zip(self.valid_data.examples, self.valid_data.items):
            ids = [self.tokenizer.encode(ex.references[0])]
            inputs, outputs = target_tensors(ids)
            batch = to_device(self.reader.collate([item]), self.device)
            total += self.loss(batch, inputs.to(self.device), outputs.to(self.device))[0].item()
            n += 1
        return total / max(n, 1)

    # --- checkpoints ----------------------------------------------------------------
    def _meta(self) -> dict:
        return build.checkpoint_meta(self.recipe, self.reader, self.tokenizer, step=self.progress.step,
                                     metric=self.cfg.metric, best=self.progress.best)

    def save(self) -> Path:
        tensors, opt_info = checkpoint.pack_optimizer(self.opt)
        rng_tensors, rng_info = checkpoint.pack_rng()
        info = {"optimizer": opt_info, "scheduler": self.sched.state_dict(), "rng": rng_info,
                "progress": self.progress.__dict__}
        path = checkpoint.save(self.out / f"ckpt-{self.progress.step:07d}", self.model, self._meta(),
                               ({**tensors, **rng_tensors}, info))
        checkpoint.keep_last(self.out, self.cfg.keep_last)
        return path

    def _restore(self, path: Path) -> None:
        checkpoint.load_weights(path, self.model)
        state = checkpoint.load_train_state(path)
        if state is None:
            raise MmdescError(f"{path}: has no training state to resume from")
        tensors, info = state
        try:
            checkpoint.unpack_optimizer(self.opt, tensors, info["optimizer"])
            self.sched.load_state_dict(info["scheduler"])
            checkpoint.unpack_rng(tensors, info["rng"])
            self.progress = Progress(**info["progress"])
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise MmdescError(f"{path}: its training state does not fit this run ({str(e)[:100]})") from None
        runfolder.resume_lr(self.opt, self.sched, self.cfg.lr)
        self.say(f"resuming from {path} (step {self.progress.step})")

    # --- the loop -------------------------------------------------------------------
    def _on_signal(self, signum, frame) -> None:
        self._signal = signum

    def run(self) -> dict:
        """Train until max_steps, max_minutes or early stopping; returns the best validation scores."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeRemainingColumn

        cfg, p = self.cfg, self.progress
        done = runfolder.finished(p, cfg)
        if done:
            self.say(done)
            return {"best": p.best, "best_step": p.best_step, "steps": p.step, "stopped": "finished"}
        self.out.mkdir(parents=True, exist_ok=True)
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        log = open(self.out / "metrics.jsonl", "a", encoding="utf-8")
        start, stop = time.monotonic() - p.seconds, None  # the clock goes on over resumes
        self.say(f"training {self.recipe.modality} model: {sum(t.numel() for t in self.model.parameters()):,} "
                 f"parameters, {len(self.dataset):,} training pairs, vocabulary {len(self.tokenizer)}, "
                 f"device {self.device}")
        bar = Bar(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                  TimeRemainingColumn(), transient=True, disable=not _is_terminal())
        try:
            with bar:
                task = bar.add_task("train", total=cfg.max_steps, completed=p.step, info="")
                while stop is None:
                    n_batches, batches = self._epoch(p.epoch, p.batch)
                    for collated in batches:
                        p.batch += 1
                        if collated.failures and not cfg.skip_bad:
                            raise DataError(f"{collated.failures[0]} (train.skip_bad=true leaves such inputs out)")
                        if collated.data is None:  # every input of the batch was unreadable (skip_bad)
                            continue
                        if build.unfreeze(self.recipe, self.model, p.step):  # encoder.unfreeze_at
                            self.say(f"step {p.step}: the encoder's backbone trains from here on")
                        losses = self.step(collated)
                        p.step += 1
                        bar.update(task, completed=p.step, info=" ".join(f"{k} {v:.3f}" for k, v in losses.items()))
                        if p.step % cfg.log_every == 0:
                            _log(log, {"step": p.step, "epoch": p.epoch, **losses,
                                       "lr": self.sched.get_last_lr()[0], "seconds": time.monotonic() - start})
                        stop = self._after_step(log, start)
                        if stop is not None:
                            break
                    if p.batch >= n_batches:
                        p.epoch, p.batch = p.epoch + 1, 0
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            log.close()
        if stop == "signal":
            raise Interrupted(self._signal, self.save())
        self.say(f"done after {p.step} steps ({stop}); best {cfg.metric} {p.best} at step {p.best_step}; "
                 f"checkpoints in {self.out}")
        return {"best": p.best, "best_step": p.best_step, "steps": p.step, "stopped": stop}

    def _after_step(self, log, start: float) -> str | None:
        cfg, p = self.cfg, self.progress
        p.seconds = time.monotonic() - start
        minutes = p.seconds / 60
        out_of_time = cfg.max_minutes > 0 and minutes >= cfg.max_minutes
        finished = p.step >= cfg.max_steps or out_of_time
        if self._signal is not None:
            return "signal"
        if p.step % cfg.valid_every == 0 or finished:
            result = self.validate()
            value = selection_value(result, cfg.metric)
            better = improved(cfg.metric, value, p.best)
            if better:
                p.best, p.best_step, p.stale = value, p.step, 0
                checkpoint.save(self.out / "best", self.model, self._meta())
            else:
                p.stale += 1
            p.history.append({"step": p.step, **result})
            _log(log, {"step": p.step, "valid": result, "best": p.best, "seconds": time.monotonic() - start})
            self.say(f"step {p.step}: valid " + ", ".join(f"{k} {v:.2f}" for k, v in result.items())
                     + (" (best)" if better else ""))
            if cfg.patience and p.stale >= cfg.patience:
                self.save()
                return "early stopping"
        if finished:
            self.save()
            return "time limit" if out_of_time else "max steps"
        if p.step % cfg.save_every == 0:
            self.save()
        return None


def _log(f, record: dict) -> None:
    f.write(json.dumps(record) + "\n")
    f.flush()


def _is_terminal() -> bool:
    import sys

    return sys.stderr.isatty()
