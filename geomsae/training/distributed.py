"""Data-parallel training over ``torch.distributed`` (launched by ``torchrun``).

Launch (gloo on CPU, nccl on CUDA; one process per device)::

    torchrun --nproc_per_node=2 -m geomsae.cli train --data ACTS --arch aen --d-sae 4096 --batch-size 4096 --out run/

``batch_size`` stays the *global* batch: each of the W ranks reads B/W tokens per step from its
own contiguous 1/W of the cache (:func:`shard_source`: for a shard folder, its own shards), with
the same seed. Step t of the run then trains on the global batch

    X_t = concat(X_t^(0), …, X_t^(W−1)),   X_t^(r) = batch t of rank r's stream,

and every rank ends the step with the same state as one process fed X_t:

- gradients: each rank's loss is a mean over its B/W tokens, so the mean of the W gradients
  (all-reduced in a post-accumulate hook, :meth:`Context.average_grads`) is the gradient of the
  mean over X_t — exact for every loss that is a token mean (all architectures; TopK's AuxK term
  divides by the residual's batch variance, so it matches only while no latent is dead);
- state: :meth:`Context.gather` all-gathers x and the forward output (codes, x̂, pre-activations)
  so that ``on_step_end`` (AEN/adaptive EMA of mean |z|, dead-latent counters, BatchTopK's
  threshold, ReLU-l1 resampling with its seeded RNG) runs on X_t on every rank: the same
  update, bit for bit, on all of them. This costs one (B, d_sae) all-gather per step (the memory
  one process would hold for X_t); a statistics-only all-reduce would be cheaper but needs one
  code path per architecture;
- metrics: computed from the gathered batch and the all-reduced loss terms;
- the input statistics (dataset scale, mean) are the average of the ranks' estimates over their
  first ``input_scale_tokens / W`` tokens;
- rank 0 alone writes checkpoints, metrics.jsonl and the final SAE.

Resume works across world sizes: a checkpoint holds the model, Adam and the step, nothing per
rank; the data of a resumed run continue from the step's position in the new world size's
streams (so a run resumed at the same W equals one never stopped).

The equality with one process is exact up to the order of float sums (the all-reduce sums W
partial gradients; one process sums B tokens at once): see tests/test_distributed.py for the
measured tolerance.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import torch
from torch import Tensor

from geomsae.data import ChunkedSource


class Context:
    """The process group of a data-parallel run: this rank, the world size, and the collectives."""

    def __init__(self, rank: int, world: int) -> None:
        self.rank, self.world = rank, world

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier()

    def local_batch(self, batch_size: int) -> int:
        """B/W, checked: the global batch must split evenly over the ranks."""
        if batch_size % self.world:
            raise ValueError(f"batch_size == {batch_size}, must be a multiple of the world size {self.world}")
        return batch_size // self.world

    def local_cfg(self, cfg: Any) -> Any:
        """The TrainConfig a rank's stream is opened with: B/W tokens per step and
        input_scale_tokens/W tokens for its share of the input statistics."""
        return dataclasses.replace(cfg, batch_size=self.local_batch(cfg.batch_size),
                                   input_scale_tokens=max(1, cfg.input_scale_tokens // self.world))

    def average_grads(self, params: list[Tensor]) -> list[Any]:
        """Hook every parameter so that its gradient, once accumulated, is replaced by the mean
        over the ranks. Returns the hook handles."""
        import torch.distributed as dist

        world = self.world

        def hook(p: Tensor) -> None:
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad.div_(world)

        return [p.register_post_accumulate_grad_hook(hook) for p in params]

    def mean(self, t: Tensor) -> Tensor:
        """The mean over the ranks of a tensor (a detached copy)."""
        import torch.distributed as dist

        t = t.detach().clone()
        dist.all_reduce(t)
        return t / self.world

    def gather(self, x: Tensor, out: Any) -> tuple[Tensor, Any]:
        """(X_t, the forward output on X_t): the ranks' batches and outputs concatenated in rank
        order along the token dimension (detached)."""
        import torch.distributed as dist

        def cat(t: Tensor) -> Tensor:
            t = t.detach().contiguous()
            parts = [torch.empty_like(t) for _ in range(self.world)]
            dist.all_gather(parts, t)
            return torch.cat(parts, dim=-2)

        return cat(x), type(out)(*(cat(t) for t in out))

    def mean_loss(self, lo: Any) -> Any:
        """The loss output with its loss and parts replaced by their means over the ranks."""
        return type(lo)(self.mean(lo.loss), {k: self.mean(v) for k, v in lo.parts.items()})

    def broadcast_(self, module: torch.nn.Module) -> None:
        """Copy rank 0's parameters and buffers to every rank (in place)."""
        import torch.distributed as dist

        with torch.no_grad():
            for t in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(t.data, 0)


def context() -> Context | None:
    """The running process group as a :class:`Context`, or None for a single process.

    Started from the torchrun environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` …) when
    the group is not initialised yet: nccl when CUDA is available, else gloo. A world of one
    is treated as a single process.
    """
    import torch.distributed as dist

    if not dist.is_available():
        return None
    if not dist.is_initialized():
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return None
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if dist.get_world_size() == 1:
        return None
    return Context(dist.get_rank(), dist.get_world_size())


def local_device(name: str) -> str:
    """Under torchrun on CUDA, 'cuda'/'auto' mean this rank's own GPU (``LOCAL_RANK``)."""
    if name in ("cuda", "auto") and torch.cuda.is_available() and "LOCAL_RANK" in os.environ:
        return f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return name


def shard_source(src: Any, ctx: Context) -> Any:
    """Rank ``ctx.rank``'s part of a finite source: its contiguous 1/W of the tokens (for a shard
    folder whose shards split evenly, its own shards). Raises for a one-shot stream."""
    if not isinstance(src, ChunkedSource):
        raise ValueError(f"data-parallel training needs a finite source (array, file or shard folder), "
                         f"not {src!r}")
    n, w = src.n_tokens, ctx.world
    if n < w:
        raise ValueError(f"the activations hold {n} tokens, fewer than the world size {w}")
    return src.subset(ctx.rank * n // w, (ctx.rank + 1) * n // w)
