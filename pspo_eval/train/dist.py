"""Data parallelism through accelerate: one process per GPU, each with its share of every rollout.

``accelerate launch -m pspo_eval train …`` (or ``torchrun``) starts one trainer per device. Each
process samples and scores ``prompts_per_step / world_size`` prompts of every rollout (whole groups,
so advantages stay per process), runs its micro-batches, and DDP averages the gradients on the last
micro-batch of a step. The normaliser of the loss (``num_items_in_batch``) is summed over all
processes and the loss multiplied by the world size, so the step equals the single-process step on
the whole rollout. Only the main process writes checkpoints and metrics. In a plain single process
nothing here imports accelerate.
"""

from __future__ import annotations

import contextlib
import os

import torch

from pspo_eval.errors import PspoError, require


class Dist:
    def __init__(self, device: torch.device | None = None):
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.accelerator = None
        self.rank = 0
        self.device = device
        if self.world_size > 1:
            accelerate = require("accelerate", extra="multigpu", what="multi-process training")
            on_cpu = device is not None and device.type == "cpu"
            self.accelerator = accelerate.Accelerator(cpu=on_cpu)  # cpu: gloo across processes
            if self.accelerator.num_processes != self.world_size:
                raise PspoError(
                    f"WORLD_SIZE is {self.world_size} but accelerate set up {self.accelerator.num_processes} process(es)",
                    "start the run with `accelerate launch` (or torchrun) and a working distributed backend",
                )
            self.rank = self.accelerator.process_index
            self.device = self.accelerator.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def check_divides(self, prompts_per_step: int) -> None:
        if prompts_per_step % self.world_size:
            raise PspoError(
                f"train.prompts_per_step ({prompts_per_step}) is not divisible by the {self.world_size} processes",
                "make prompts_per_step a multiple of the number of GPUs",
            )

    def shard(self, items: list) -> list:
        """This process's share of a rollout's prompts (every world_size-th, starting at its rank)."""
        return items[self.rank :: self.world_size]

    def prepare_model(self, model):
        if self.accelerator is None:
            return model
        return self.accelerator.prepare_model(model)

    def sync_context(self, model, sync: bool):
        """Skip DDP's gradient all-reduce on all but the last micro-batch of a step."""
        if self.accelerator is None or sync or not hasattr(model, "no_sync"):
            return contextlib.nullcontext()
        return model.no_sync()

    def _reduce(self, values: list[float], op: str) -> list[float]:
        if self.world_size == 1 or not values:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        reduce_op = {"sum": torch.distributed.ReduceOp.SUM, "min": torch.distributed.ReduceOp.MIN,
                     "max": torch.distributed.ReduceOp.MAX}[op]
        torch.distributed.all_reduce(t, op=reduce_op)
        return t.tolist()

    def sum(self, values: list[float]) -> list[float]:
        return self._reduce(values, "sum")

    def min(self, values: list[float]) -> list[float]:
        return self._reduce(values, "min")

    def max(self, values: list[float]) -> list[float]:
        return self._reduce(values, "max")

    def gather(self, values: list) -> list:
        """Concatenate a list of picklable values from all processes (in rank order)."""
        if self.world_size == 1:
            return list(values)
        from accelerate.utils import gather_object

        return list(gather_object(list(values)))

    def broadcast_flag(self, flag: bool) -> bool:
        return bool(self.max([1.0 if flag else 0.0])[0])

    def barrier(self) -> None:
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()
