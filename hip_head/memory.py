"""Memory of the readout head: an estimate before it runs, and the chunk size that bounds it.

The head's cost grows with the number P of atom pairs within ``hessian_cutoff``. Its memory
has three parts:

- **resident**, whatever the evaluation order: the blocks it returns and their assembly
  (:data:`RESIDENT_FLOATS_PER_PAIR` numbers and :data:`RESIDENT_INDEX_BYTES_PER_PAIR` bytes of
  indices per pair) and a few per-atom vectors;
- **working set** of one chunk of pairs, in inference (autograd recording nothing): the
  per-pair intermediates of the largest pass (an interaction, or the final products), alive
  only while that chunk is evaluated;
- **kept activations**, when autograd records the head (training, gradients requested): every
  pass's per-pair intermediates for all pairs at once, stored for the backward pass.

The per-pair counts come from the head's widths (:meth:`HessianReadout.estimate_memory`) and
are scaled by calibration factors (:data:`WORK_CALIBRATION`, :data:`KEPT_CALIBRATION`)
measured as the growth of the resident set (CPU, ``VmHWM``) over the head's forward pass.

Available memory: ``torch.cuda.mem_get_info`` (plus memory PyTorch has cached but not used) on
CUDA; on CPU ``psutil.virtual_memory().available`` when psutil is installed, else
``MemAvailable`` of ``/proc/meminfo``, else the free physical pages.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from hip_head.errors import HeadMemoryError, InvalidArgumentError

#: Fraction of the available memory the head may use when no budget is given.
DEFAULT_MEMORY_FRACTION = 0.5
#: Most pairs evaluated at once in inference: larger chunks are no faster (measured on CPU).
MAX_CHUNK_PAIRS = 8192
#: Fewest pairs per chunk: below this the head would be slow; a budget that does not allow it
#: is refused.
MIN_CHUNK_PAIRS = 256
#: Numbers per pair allocated whatever the chunking: the pair blocks' 9 irrep components, M_ab,
#: M_baᵀ and H_ab (9 each), and the block-sparse Hessian's copy of H_ab.
RESIDENT_FLOATS_PER_PAIR = 45
#: Bytes of int64 indices per pair made for the output (the block-sparse Hessian's rows, cols).
RESIDENT_INDEX_BYTES_PER_PAIR = 16
#: Working set per pair over the counted numbers: measured 1.85 to 2.5 (allocator slack,
#: transient copies; CPU, 16 and 32 channels, 1 and 2 interactions, float32 and float64).
WORK_CALIBRATION = 2.75
#: Memory kept for backward per pair over the counted numbers: measured 1.12 to 1.19.
KEPT_CALIBRATION = 1.25

_GIB = float(2**30)


def available_memory_bytes(device: torch.device | str) -> int:
    """Memory that can still be allocated on ``device``, bytes.

    CUDA: free device memory plus what PyTorch's caching allocator holds unused. CPU: the
    kernel's estimate of memory available without swapping (psutil, else ``/proc/meminfo``),
    else free physical pages; where none can be read, a huge number (nothing is refused).
    """
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + max(cached, 0))
    if device.type != "cpu":
        return 1 << 62
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # non-POSIX: do not block
        return 1 << 62


@dataclass(frozen=True)
class HeadMemoryEstimate:
    """What the head will allocate for one batch, and how it will evaluate the pairs.

    Attributes:
        num_atoms: N.
        num_pairs: P, ordered pairs within the Hessian cutoff.
        dtype: evaluation dtype.
        device: where the head runs.
        requires_grad: autograd records the head (all pairs at once, activations kept).
        resident_bytes: allocated whatever the chunking (outputs, per-atom vectors).
        bytes_per_pair: per pair of a chunk (inference) or kept per pair (autograd).
        chunk_pairs: pairs evaluated at once (P when autograd records, or P is small).
        available_bytes: memory available on ``device`` now.
        limit_bytes: what the head may use: the budget, or ``DEFAULT_MEMORY_FRACTION`` of the
            available memory, never more than the available memory.
        budget_bytes: the budget given, or None.
    """

    num_atoms: int
    num_pairs: int
    dtype: torch.dtype
    device: torch.device
    requires_grad: bool
    resident_bytes: int
    bytes_per_pair: int
    chunk_pairs: int
    available_bytes: int
    limit_bytes: int
    budget_bytes: int | None

    @property
    def total_bytes(self) -> int:
        """Peak the head is expected to reach: resident part + one chunk's (or all) pairs."""
        return self.resident_bytes + self.bytes_per_pair * self.chunk_pairs

    @property
    def num_chunks(self) -> int:
        """Number of chunks the pairs are evaluated in."""
        return -(-self.num_pairs // self.chunk_pairs) if self.num_pairs else 0

    def describe(self) -> str:
        """One line: pairs, dtype, device, chunking and the expected peak."""
        mode = (
            "autograd recording, all pairs at once"
            if self.requires_grad
            else f"inference in {self.num_chunks} chunk(s) of up to {self.chunk_pairs} pairs"
        )
        return (
            f"{self.num_pairs} pairs of {self.num_atoms} atoms, {str(self.dtype).split('.')[-1]} "
            f"on {self.device}, {mode}: about {format_bytes(self.total_bytes)} "
            f"({self.bytes_per_pair} bytes per pair)"
        )


def format_bytes(num_bytes: float) -> str:
    """``num_bytes`` in GiB (or MiB below 1 GiB), for messages."""
    if abs(num_bytes) >= _GIB:
        return f"{num_bytes / _GIB:.2f} GiB"
    return f"{num_bytes / 2**20:.1f} MiB"


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def plan_head_memory(
    *,
    num_atoms: int,
    num_pairs: int,
    dtype: torch.dtype,
    device: torch.device,
    work_floats_per_pair: int,
    kept_floats_per_pair: int,
    floats_per_atom: int,
    requires_grad: bool,
    memory_budget_gb: float | None = None,
) -> HeadMemoryEstimate:
    """Choose the chunk size, or refuse before anything is allocated.

    Args:
        num_atoms: N.
        num_pairs: P.
        dtype: evaluation dtype.
        device: where the head runs.
        work_floats_per_pair: numbers per pair of one chunk's working set (uncalibrated).
        kept_floats_per_pair: numbers per pair autograd keeps (uncalibrated).
        floats_per_atom: numbers per atom the head allocates.
        requires_grad: autograd records the head.
        memory_budget_gb: GiB the head may use; None: ``DEFAULT_MEMORY_FRACTION`` of the
            available memory.

    Returns:
        The estimate, with ``chunk_pairs`` the largest chunk (at most
        :data:`MAX_CHUNK_PAIRS` in inference) that keeps ``total_bytes`` within the limit.

    Raises:
        HeadMemoryError: even the smallest evaluation (chunks of ``MIN_CHUNK_PAIRS`` pairs in
            inference, all pairs with autograd recording) exceeds the limit.
        ValueError: a budget that is not positive.
    """
    if memory_budget_gb is not None and not memory_budget_gb > 0:
        raise InvalidArgumentError(f"memory_budget_gb must be positive, got {memory_budget_gb!r}")
    itemsize = _itemsize(dtype)
    resident = (
        num_pairs * (RESIDENT_FLOATS_PER_PAIR * itemsize + RESIDENT_INDEX_BYTES_PER_PAIR)
        + num_atoms * floats_per_atom * itemsize
    )
    per_pair = int(WORK_CALIBRATION * work_floats_per_pair * itemsize)
    if requires_grad:  # kept activations, and at least one pass's working set
        per_pair = max(per_pair, int(KEPT_CALIBRATION * kept_floats_per_pair * itemsize))
    available = available_memory_bytes(device)
    budget = None if memory_budget_gb is None else int(memory_budget_gb * _GIB)
    limit = (
        min(budget, available) if budget is not None else int(DEFAULT_MEMORY_FRACTION * available)
    )
    if requires_grad or num_pairs <= MIN_CHUNK_PAIRS:
        chunk = max(num_pairs, 1)
    else:
        fits = (limit - resident) // per_pair
        chunk = int(min(max(fits, MIN_CHUNK_PAIRS), MAX_CHUNK_PAIRS, num_pairs))
    estimate = HeadMemoryEstimate(
        num_atoms=num_atoms,
        num_pairs=num_pairs,
        dtype=dtype,
        device=torch.device(device),
        requires_grad=requires_grad,
        resident_bytes=int(resident),
        bytes_per_pair=per_pair,
        chunk_pairs=chunk,
        available_bytes=available,
        limit_bytes=int(limit),
        budget_bytes=budget,
    )
    if num_pairs and estimate.total_bytes > limit:
        raise HeadMemoryError(_refusal(estimate))
    return estimate


def _refusal(estimate: HeadMemoryEstimate) -> str:
    """The message of a refused evaluation: the estimate, the limit, and what to do."""
    available = f"{format_bytes(estimate.available_bytes)} available on {estimate.device}"
    if estimate.budget_bytes is not None and estimate.budget_bytes <= estimate.available_bytes:
        limit = f"the budget of {format_bytes(estimate.budget_bytes)} ({available})"
    elif estimate.budget_bytes is not None:
        limit = f"the {available} (budget {format_bytes(estimate.budget_bytes)})"
    else:
        limit = (
            f"{format_bytes(estimate.limit_bytes)}, the default {DEFAULT_MEMORY_FRACTION:.0%} "
            f"of the {available}"
        )
    advice = ["a smaller hessian_cutoff (in dense systems the pair count grows as its cube)"]
    if _itemsize(estimate.dtype) > 4:
        advice.append("float32 instead of float64 (half the memory)")
    advice.append("hessian_output='blocks' if a dense Hessian is asked for (no (3N)² array)")
    if estimate.requires_grad:
        advice.insert(
            0,
            "inference under torch.no_grad() (as HIPModel.predict runs): pairs are then "
            "evaluated in chunks that fit memory_budget_gb",
        )
    else:
        advice.insert(0, "a larger memory_budget_gb, if the machine has the memory")
    return (
        f"the Hessian head would not fit: {estimate.describe()}, more than {limit}; nothing "
        "was allocated. Try " + "; ".join(advice)
    )
