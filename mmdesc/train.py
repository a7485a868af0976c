"""The training loop: seeded, resumable, validated with beam search, checkpointed safely,
on one process or several (torchrun, DistributedDataParallel), in fp32, bf16 or fp16.

Resuming is exact: a checkpoint carries the weights, the optimizer and scheduler, every
RNG state (of every process) and the position in the (seed, epoch)-determined batch order,
so a run killed at any point and resumed ends with the same weights as one that was never
stopped. ``build.setup_training`` assembles what the loop trains; the loop only trains.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from mmdesc import build, checkpoint, runfolder
from mmdesc.data import Batch, BucketSampler, loader, target_tensors, to_device
from mmdesc.distributed import OnEveryRank
from mmdesc.errors import DataError, MmdescError
from mmdesc.metrics import improved, selection_value
from mmdesc.tokenize import PAD

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


@dataclass
class Budget:
    """The share of train.max_minutes spent (0..1), as every process agreed at the last step:
    what a ``train.anneal: time`` schedule decays over. Not saved: a resumed run's clock
    (``Progress.seconds``) gives it back at its first step."""

    share: float = 0.0


def lr_lambda(schedule: str, warmup: int, max_steps: int, budget: Budget | None = None) -> Callable[[int], float]:
    """The learning-rate factor at each step. With a ``budget`` the decay runs over whichever
    comes first, max_steps or the time limit (warm-up stays in steps)."""
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if schedule == "cosine":
            p = min(1.0, (step - warmup) / max(1, max_steps - warmup))
            if budget is not None:
                p = max(p, min(1.0, budget.share))
            return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * p))
        if schedule == "inverse_sqrt":
            return math.sqrt(max(1, warmup) / max(step, 1))
        return 1.0
    return f


class Trainer:
    """Trains the parts ``build.setup_training`` assembled; ``run()`` trains to the end.

    ``Trainer(recipe)`` sets the parts up here (one process): the shortcut of tests and scripts.

    With several processes, every process runs its share of every batch (``data.BucketSampler``)
    and DistributedDataParallel sums the gradients; once per step the processes sum a few
    numbers (``_agree``): whether a loss was not finite, whether a signal came, whether the time
    is up, and the step's loss, so that all of them skip, stop or go on together. Validation
    is sharded the same way and its results gathered on rank 0, which alone writes
    checkpoints (with every process's RNG state), the log and the progress bar."""

    def __init__(self, parts, say: Callable[[str], None] = print, resume: bool = True):
        if not isinstance(parts, build.TrainingParts):
            parts = build.setup_training(parts, say, resume=resume)
        self.parts = parts
        self.recipe, self.cfg, self.processes = parts.recipe, parts.recipe.train, parts.processes
        self.say = say if self.processes.main else (lambda _: None)
        self.out = Path(self.recipe.out)
        self.device, self.precision = parts.device, parts.precision
        self.reader, self.tokenizer = parts.reader, parts.tokenizer
        self.dataset, self.collate, self.lengths = parts.dataset, parts.collate, parts.lengths
        self.targets = parts.targets
        self.valid_data, self.valid_index = parts.valid, parts.valid_index
        self.model, self.net, self.objective = parts.model, parts.net, parts.objective
        self.opt, self.sched, self.scaler = parts.optimizer, parts.schedule, parts.scaler
        self.budget = next((fn.budget for fn in self.sched.lr_lambdas if getattr(fn, "budget", None)), None)
        self.progress = parts.progress
        self._signal: int | None = None
        self._bad_run = 0  # consecutive non-finite losses
        self._clock: float | None = None  # monotonic time at which the run's step 0 would have started
        self._stopping = (False, False)  # (a signal came, the time is up), as every process agreed last step
        self._spare: Batch | None = None  # the last readable micro-batch (stands in, at weight 0, for one that is not)

    # --- data -----------------------------------------------------------------------
    def batch(self, indices: list[int]):
        """The collated batch of training pairs ``indices``, decoded here (tests, benchmarks)."""
        return self.collate([self.dataset[i] for i in indices])

    def _epoch(self, epoch: int, start: int):
        """The steps of ``epoch`` from step ``start`` on: how many the epoch has in all, and
        (this process's micro-batches, (target tokens, pairs) of the whole step's batch) of
        each, decoded by the DataLoader's workers."""
        self.dataset.epoch = epoch
        p = self.processes
        sampler = BucketSampler(self.lengths, self.cfg.batch_size, self.recipe.seed, epoch, start,
                                rank=p.rank, world=p.world, accumulate=self.cfg.accumulate)
        wholes = [(sum(self.targets[i] for i in b), len(b)) for b in sampler.steps]
        batches = loader(self.dataset, sampler, self.collate, workers=self.cfg.workers,
                         pin_memory=self.device.type == "cuda")

        def steps():
            micro, k = [], self.cfg.accumulate
            for j, b in enumerate(batches):
                micro.append(b)
                if len(micro) == k:
                    yield tuple(micro), wholes[j // k]
                    micro = []
        return len(sampler.steps) + start, steps()

    # --- one step -------------------------------------------------------------------
    def _autocast(self):
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    def loss(self, batch: dict, inputs, outputs) -> tuple[torch.Tensor, dict]:
        """The objective's total and its named terms on one batch (already on the device)."""
        with self._autocast():
            return self.objective(self.net, batch, inputs, outputs)

    def _backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self, *micro: Batch, whole: tuple[int, int] | None = None,
             failure: MmdescError | None = None) -> dict[str, float]:
        """One optimisation step on collated micro-batches (this process's share of the step's
        batch); returns the step's loss and its terms over the whole batch.

        ``whole``: (target tokens, pairs) of the whole batch over every process (default: those
        of ``micro``). Each micro-batch's terms weigh its share of the tokens or the pairs (what
        the term is a mean over, ``Objective.MEAN_OVER``), so the gradient is the one of the whole
        batch however it is split over processes and micro-batches.
        ``failure``: what this process met reading its share (raised here, once every process
        knows that one of them failed, so that all stop together)."""
        self.net.train()
        p = self.processes
        if failure is not None:
            micro = ()
        elif whole is None:
            readable = [m for m in micro if m.data is not None]
            whole = (sum(int((m.outputs != PAD).sum()) for m in readable), sum(len(m.outputs) for m in readable))
        if p.many and micro and micro[-1].data is None:  # this process must still take part in the sum
            micro = tuple(m for m in micro[:-1] if m.data is not None) + (self._stand_in(),)
        self.opt.zero_grad(set_to_none=True)
        bad, sums, last = False, {}, None
        for i, m in enumerate(micro):
            if m.data is None:
                continue
            is_last = i == len(micro) - 1
            batch, inputs, outputs = to_device(m.data, self.device), m.inputs.to(self.device), m.outputs.to(self.device)
            with self.net.no_sync() if p.many and not is_last else contextlib.nullcontext():
                loss, terms = self.loss(batch, inputs, outputs)
                loss, terms = self._part(loss, terms, m, whole)
                value = loss.item()
                if not math.isfinite(value):
                    bad = True
                    break
                for k, v in {"loss": value, **{k: v.item() for k, v in terms.items()}}.items():
                    sums[k] = sums.get(k, 0.0) + v
                scaled = loss * p.world if p.many else loss  # DDP averages the gradients over processes
                if is_last:
                    last = scaled
                else:
                    self._backward(scaled)
        names = ["loss", *self.objective.names]
        failed, bad, *totals = self._agree([float(failure is not None), float(bad), *(sums.get(k, 0.0) for k in names)])
        if failed > 0:
            raise failure or OnEveryRank("another process of the run met an input it cannot read", DataError.exit_code)
        if bad > 0:
            self.progress.bad_steps += 1
            self._bad_run += 1
            self.opt.zero_grad(set_to_none=True)
            if self._bad_run >= MAX_BAD_STEPS:
                raise self._everywhere(MmdescError(
                    f"training diverged: {MAX_BAD_STEPS} consecutive steps had a non-finite loss "
                    f"(try a lower train.lr or train.clip)"))
            return {"loss": float("nan")}
        self._bad_run = 0
        if last is not None:
            self._backward(last)
        if self.scaler is not None:
            self.scaler.unscale_(self.opt)
        if self.cfg.clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip)
        if self.scaler is not None:
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            self.opt.step()
        self.sched.step()
        return dict(zip(names, totals))

    def _part(self, loss: torch.Tensor, terms: dict, m: Batch, whole: tuple[int, int]):
        """The micro-batch ``m``'s part of the whole batch's loss and terms: each term times
        ``m``'s share of what it is a mean over (1 and 1 for a batch that is not split)."""
        tokens, pairs = whole
        shares = {"tokens": float((m.outputs != PAD).sum()) / max(tokens, 1) * m.weight,
                  "inputs": len(m.outputs) / max(pairs, 1) * m.weight}
        if shares["tokens"] == shares["inputs"] == 1.0:
            return loss, terms
        terms = {k: t * shares[self.objective.MEAN_OVER.get(k, "inputs")] for k, t in terms.items()}
        with self._autocast():
            return self.objective.combine(terms), terms

    def _stand_in(self) -> Batch:
        """A micro-batch every input of which failed (train.skip_bad), replaced by the last
        readable one at weight 0: with several processes each must run the step."""
        if self._spare is None:
            raise self._everywhere(DataError("every input of the first batch of this process failed "
                                             "(train.skip_bad): nothing to train this step on"))
        return dataclasses.replace(self._spare, failures=[], weight=0.0)

    def _agree(self, values: list[float]) -> list[float]:
        """``values`` summed over every process, with two stop flags: whether any process
        received a signal, whether any one's clock passed train.max_minutes (kept in
        ``_stopping``). One small all-reduce per step; a no-op with one process."""
        cfg = self.cfg
        elapsed = time.monotonic() - self._clock if self._clock is not None else 0.0
        out_of_time = cfg.max_minutes > 0 and self._clock is not None and elapsed / 60 >= cfg.max_minutes
        total = self.processes.total([float(self._signal is not None), float(out_of_time), elapsed, *values])
        self._stopping = (total[0] > 0, total[1] > 0)
        if self.budget is not None:  # the mean clock: every process decays its rate the same way
            self.budget.share = total[2] / self.processes.world / (cfg.max_minutes * 60)
        return total[3:]

    def _everywhere(self, error: MmdescError) -> MmdescError:
        """``error`` as every process raises it when all of them met it together: rank 0 says it."""
        return error if self.processes.main else OnEveryRank(str(error), error.exit_code)

    # --- validation -----------------------------------------------------------------
    def validate(self) -> dict:
        """Scores of the valid split: each process describes its share, rank 0 scores them
        all (in the split's order), every process gets the scores."""
        from mmdesc.data import Loaded
        from mmdesc.evaluate import score
        from mmdesc.predict import describe

        self.model.eval()
        trained = build.Trained(self.model, self.reader, self.tokenizer, self.recipe, {}, self.out)
        if self.cfg.metric == "loss":
            result = {"loss": self._valid_loss()}
        else:
            search = self.recipe.search
            described = describe(trained, self.valid_data.items, batch_size=search.batch_size,
                                 **build.search_kwargs(search), attention=False)
            mine = list(zip(self.valid_index, self.valid_data.examples, described))
            every = sorted((x for part in self.processes.gather(mine) for x in part), key=lambda x: x[0])

            def scores() -> dict:
                loaded = Loaded(examples=[ex for _, ex, _ in every])
                result, _ = score(trained, loaded, alignment=False, described=[d for _, _, d in every])
                return {k: v for k, v in result.items() if not k.endswith("signature")}

            result = self.processes.main_only(scores)
        self.model.train()
        return result

    @torch.no_grad()
    def _valid_loss(self) -> float:
        total, n = 0.0, 0
        for ex, item in zip(self.valid_data.examples, self.valid_data.items):
            ids = [self.tokenizer.encode(ex.references[0])]
            inputs, outputs = target_tensors(ids)
            batch = to_device(self.reader.collate([item]), self.device)
            with self._autocast():
                total += self.objective(self.model, batch, inputs.to(self.device), outputs.to(self.device))[0].item()
            n += 1
        total, n = self.processes.total([total, n])
        return total / max(n, 1)

    # --- checkpoints ----------------------------------------------------------------
    def _meta(self) -> dict:
        return build.checkpoint_meta(self.recipe, self.reader, self.tokenizer, step=self.progress.step,
                                     metric=self.cfg.metric, best=self.progress.best)

    def _rng_states(self) -> tuple[dict, dict] | None:
        """Every process's RNG state (rank 0's as ``rng.*``, rank r's as ``rankR.rng.*``), on
        rank 0; None on the others."""
        every = self.processes.gather(checkpoint.pack_rng())
        if not self.processes.main:
            return None
        tensors, info = dict(every[0][0]), dict(every[0][1])
        for r, (t, i) in enumerate(every[1:], 1):
            tensors.update({f"rank{r}.{k}": v for k, v in t.items()})
            info[f"rank{r}"] = i
        return tensors, info

    def save(self) -> Path | None:
        """A resumable checkpoint of the model (unwrapped: it loads anywhere), written by rank 0;
        every process takes part (its RNG state goes in). Returns its path (None off rank 0)."""
        rng = self._rng_states()
        if rng is None:
            return None
        tensors, opt_info = checkpoint.pack_optimizer(self.opt)
        rng_tensors, rng_info = rng
        info = {"optimizer": opt_info, "scheduler": self.sched.state_dict(), "rng": rng_info,
                "progress": self.progress.__dict__, "processes": self.processes.world}
        if self.scaler is not None:
            info["scaler"] = self.scaler.state_dict()
        path = checkpoint.save(self.out / f"ckpt-{self.progress.step:07d}", self.model, self._meta(),
                               ({**tensors, **rng_tensors}, info))
        checkpoint.keep_last(self.out, self.cfg.keep_last)
        return path

    # --- the loop -------------------------------------------------------------------
    def _on_signal(self, signum, frame) -> None:
        self._signal = signum

    def run(self) -> dict:
        """Train until max_steps, max_minutes or early stopping; returns the best validation scores."""
        with self.processes.talking():
            return self._run()

    def _run(self) -> dict:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeRemainingColumn

        cfg, p, main = self.cfg, self.progress, self.processes.main
        done = runfolder.finished(p, cfg)
        if done:
            self.say(done)
            return {"best": p.best, "best_step": p.best_step, "steps": p.step, "stopped": "finished"}
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        log = open(self.out / "metrics.jsonl", "a", encoding="utf-8") if main else None
        self._clock, stop = time.monotonic() - p.seconds, None  # the clock goes on over resumes
        many = f", {self.processes.world} processes" if self.processes.many else ""
        self.say(f"training {self.recipe.modality} model: {sum(t.numel() for t in self.model.parameters()):,} "
                 f"parameters, {len(self.dataset):,} training pairs, vocabulary {len(self.tokenizer)}, "
                 f"device {self.device}{many}" + (f", {self.precision}" if self.precision != "fp32" else ""))
        bar = Bar(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                  TimeRemainingColumn(), transient=True, disable=not (main and _is_terminal()))
        try:
            with bar:
                task = bar.add_task("train", total=cfg.max_steps, completed=p.step, info="")
                while stop is None:
                    n_steps, steps = self._epoch(p.epoch, p.batch)
                    for micro, whole in steps:
                        p.batch += 1
                        failed = next((m.failures[0] for m in micro if m.failures), None)
                        failure = None if failed is None or cfg.skip_bad else DataError(
                            f"{failed} (train.skip_bad=true leaves such inputs out)")
                        if not self.processes.many and failure is None and all(m.data is None for m in micro):
                            continue  # every input of the step was unreadable (skip_bad)
                        self._spare = next((m for m in reversed(micro) if m.data is not None), self._spare)
                        self.processes.die_if_told(p.step + 1)
                        if build.unfreeze(self.recipe, self.model, p.step):  # encoder.unfreeze_at
                            self.say(f"step {p.step}: the encoder's backbone trains from here on")
                        losses = self.step(*micro, whole=whole, failure=failure)
                        p.step += 1
                        bar.update(task, completed=p.step, info=" ".join(f"{k} {v:.3f}" for k, v in losses.items()))
                        if main and p.step % cfg.log_every == 0:
                            _log(log, {"step": p.step, "epoch": p.epoch, **losses,
                                       "lr": self.sched.get_last_lr()[0], "seconds": time.monotonic() - self._clock})
                        stop = self._after_step(log)
                        if stop is not None:
                            break
                    if p.batch >= n_steps:
                        p.epoch, p.batch = p.epoch + 1, 0
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            if log is not None:
                log.close()
        if stop == "signal":
            signum = self._signal or signal.SIGTERM  # a process the signal did not reach stops with the others
            path = self.save()
            raise Interrupted(signum, path) if main else OnEveryRank("interrupted", 128 + signum)
        self.say(f"done after {p.step} steps ({stop}); best {cfg.metric} {p.best} at step {p.best_step}; "
                 f"checkpoints in {self.out}")
        return {"best": p.best, "best_step": p.best_step, "steps": p.step, "stopped": stop}

    def _after_step(self, log) -> str | None:
        """What the step just taken leads to, the same on every process: validation, a
        checkpoint, or the reason to stop (None: go on)."""
        cfg, p, main = self.cfg, self.progress, self.processes.main
        p.seconds = time.monotonic() - self._clock
        signalled, out_of_time = self._stopping
        finished = p.step >= cfg.max_steps or out_of_time
        if signalled:
            return "signal"
        if p.step % cfg.valid_every == 0 or finished:
            result = self.validate()
            value = selection_value(result, cfg.metric)
            better = improved(cfg.metric, value, p.best)
            if better:
                p.best, p.best_step, p.stale = value, p.step, 0
                if main:
                    checkpoint.save(self.out / "best", self.model, self._meta())
            else:
                p.stale += 1
            p.history.append({"step": p.step, **result})
            if main:
                _log(log, {"step": p.step, "valid": result, "best": p.best, "seconds": p.seconds})
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
