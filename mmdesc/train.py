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
import torch.nn.functional as F

from mmdesc import build, checkpoint, runfolder
from mmdesc.data import Loaded, bucket_batches, load_all, make_pairs, target_tensors, to_device
from mmdesc.decoder import doubly_stochastic_penalty
from mmdesc.errors import DataError, MmdescError

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
            self.reader.fit(train_ex)
            self.tokenizer = build.build_tokenizer(recipe, train_ex)
        self.train_data = self._load("train", train_ex)
        valid_ex = build.read_split(recipe, "valid")[: self.cfg.valid_size]
        self.valid_data = self._load("valid", valid_ex)
        self.pairs = make_pairs(self.train_data, self.tokenizer, recipe.data.max_target_words)
        self.lengths = [self.reader.length(self.train_data.items[i]) * 1000 + len(y) for i, y in self.pairs]
        self.model = build.build_model(recipe, self.reader, self.tokenizer, pretrained=last is None).to(self.device)
        self.model.decoder.fuse_attention(self.cfg.compile)
        decay = [p for n, p in self.model.named_parameters() if p.dim() >= 2 and p.requires_grad]
        other = [p for n, p in self.model.named_parameters() if p.dim() < 2 and p.requires_grad]
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": self.cfg.weight_decay},
                                      {"params": other, "weight_decay": 0.0}], lr=self.cfg.lr)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lr_lambda(self.cfg.schedule, self.cfg.warmup, self.cfg.max_steps))
        self.progress = Progress()
        if last is not None:
            self._restore(last)
        if resume:  # the steps after the checkpoint are trained, and logged, again
            runfolder.trim_log(self.out / "metrics.jsonl", self.progress.step)
        self._signal: int | None = None
        self._bad_run = 0  # consecutive non-finite losses

    # --- data -----------------------------------------------------------------------
    def _load(self, split: str, examples) -> Loaded:
        loaded = load_all(self.reader, examples)
        if loaded.failures:
            shown = "\n".join(f"  {e}" for e in loaded.failures[:10])
            more = f"\n  ... and {len(loaded.failures) - 10} more" if len(loaded.failures) > 10 else ""
            if not self.cfg.skip_bad:
                raise DataError(f"{len(loaded.failures)} of {len(examples)} {split} inputs cannot be read:\n"
                                f"{shown}{more}\n(train.skip_bad=true trains on the rest)")
            self.say(f"skipping {len(loaded.failures)} unreadable {split} inputs:\n{shown}{more}")
        if not loaded.items:
            raise DataError(f"no usable {split} inputs")
        return loaded

    def _batch(self, indices: list[int]):
        items = [self.train_data.items[self.pairs[i][0]] for i in indices]
        inputs, outputs = target_tensors([self.pairs[i][1] for i in indices])
        return to_device(self.reader.collate(items), self.device), inputs.to(self.device), outputs.to(self.device)

    # --- one step -------------------------------------------------------------------
    def loss(self, batch: dict, inputs, outputs) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=torch.bfloat16,
                            enabled=self.cfg.amp and self.device.type == "cuda"):
            logits, alphas, ctx = self.model(batch, inputs)
        loss = F.cross_entropy(logits.float().flatten(0, 1), outputs.flatten(), ignore_index=0,
                               label_smoothing=self.cfg.label_smoothing)  # (B*T, V) vs (B*T,)
        if self.recipe.decoder.ds_penalty > 0:
            loss = loss + self.recipe.decoder.ds_penalty * doubly_stochastic_penalty(
                alphas.float(), (outputs != 0).float(), ctx.mask.float())
        return loss

    def step(self, indices: list[int]) -> float:
        self.model.train()
        loss = self.loss(*self._batch(indices))
        self.opt.zero_grad(set_to_none=True)
        if not torch.isfinite(loss):
            self.progress.bad_steps += 1
            self._bad_run += 1
            if self._bad_run >= MAX_BAD_STEPS:
                raise MmdescError(f"training diverged: {MAX_BAD_STEPS} consecutive steps had a non-finite loss "
                                  f"(try a lower train.lr or train.clip)")
            return float("nan")
        self._bad_run = 0
        loss.backward()
        if self.cfg.clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip)
        self.opt.step()
        self.sched.step()
        return loss.item()

    # --- validation -----------------------------------------------------------------
    def validate(self) -> dict:
        from mmdesc.evaluate import score

        self.model.eval()
        trained = build.Trained(self.model, self.reader, self.tokenizer, self.recipe, {}, self.out)
        if self.cfg.metric == "loss":
            result = {"loss": self._valid_loss()}
        else:
            result, _ = score(trained, self.valid_data, batch_size=self.recipe.search.batch_size,
                              alignment=False, **build.search_kwargs(self.recipe.search))
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
            total += self.loss(batch, inputs.to(self.device), outputs.to(self.device)).item()
            n += 1
        return total / max(n, 1)

    def _improved(self, value: float) -> bool:
        best = self.progress.best
        if self.cfg.metric == "loss":
            return best is None or value < best
        return best is None or value > best

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
        start, last_loss, stop = time.monotonic() - p.seconds, float("nan"), None  # the clock goes on over resumes
        self.say(f"training {self.recipe.modality} model: {sum(t.numel() for t in self.model.parameters()):,} "
                 f"parameters, {len(self.pairs):,} training pairs, vocabulary {len(self.tokenizer)}, "
                 f"device {self.device}")
        bar = Bar(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                  TimeRemainingColumn(), transient=True, disable=not _is_terminal())
        try:
            with bar:
                task = bar.add_task("train", total=cfg.max_steps, completed=p.step, info="")
                while stop is None:
                    batches = bucket_batches(self.lengths, cfg.batch_size, self.recipe.seed, p.epoch)
                    while p.batch < len(batches) and stop is None:
                        last_loss = self.step(batches[p.batch])
                        p.batch += 1
                        p.step += 1
                        bar.update(task, completed=p.step, info=f"loss {last_loss:.3f}")
                        if p.step % cfg.log_every == 0:
                            _log(log, {"step": p.step, "epoch": p.epoch, "loss": last_loss,
                                       "lr": self.sched.get_last_lr()[0], "seconds": time.monotonic() - start})
                        stop = self._after_step(log, start)
                    if p.batch >= len(batches):
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
            value = result.get(cfg.metric, result.get("bleu4"))
            improved = self._improved(value)
            if improved:
                p.best, p.best_step, p.stale = value, p.step, 0
                checkpoint.save(self.out / "best", self.model, self._meta())
            else:
                p.stale += 1
            p.history.append({"step": p.step, **result})
            _log(log, {"step": p.step, "valid": result, "best": p.best, "seconds": time.monotonic() - start})
            self.say(f"step {p.step}: valid " + ", ".join(f"{k} {v:.2f}" for k, v in result.items())
                     + (" (best)" if improved else ""))
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
