"""Run one reference training of the second model zoo (enoche/CM3, enoche/LIRDRec or
rkl71/MambaRec, one seed) from a checkout outside this project, with runtime shims; JSON out.

The three repositories are MMRec forks (same loader, trainer and evaluator). On top of
``benchmarks.parity_mmrec.apply_shims`` (NumPy 2, SciPy's ``dok_matrix._update``, optional
imports, ``.cuda()``) they need, applied here by monkeypatching and never by editing
their code:

- ``torch_dct`` (LIRDRec): not installed in this project; point ``--extra-path`` at a
  folder holding the PyPI package (``pip download torch-dct --no-deps`` and unzip);
- ``torch_scatter`` (MambaRec's graph normalisation): a stand-in ``scatter_add`` built on
  ``Tensor.index_add`` (it only sums edge weights per row);
- CM3 registers ``result_embed`` as an ``nn.Parameter`` and later assigns a plain tensor
  to it, which torch refuses on a CPU (on a GPU ``.to(device)`` hides it by returning a
  non-parameter copy): the parameter is dropped after construction, as on a GPU.

``--fast-mmd`` replaces MambaRec's ``mmd_loss``, which materialises a batch x batch x d
difference tensor per kernel (1 GiB at batch 2048 and d 64; on this CPU one epoch of
ML-100K took over 15 minutes), by the same Gaussian-kernel MMD from one matmul per kernel
(identical values up to rounding). It changes speed only; the reference's seconds per
epoch are reported for the shimmed (faster) version.

``--fresh-eval`` replaces CM3's / LIRDRec's ``full_sort_predict`` (which scores with the
vectors cached from the last training batch) by a fresh full-graph forward pass in
eval mode, to measure what that caching changes. Timing: CPU seconds of this process
(``time.process_time``) for the span the reference logs as training (pre-epoch work,
sampling, batches; no evaluation), so load from other jobs does not inflate it.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import types
from pathlib import Path
from typing import Any

from benchmarks.parity_mmrec import fit_reference, print_result


def torch_scatter_stand_in() -> None:
    import torch

    def scatter_add(src: torch.Tensor, index: torch.Tensor, dim: int = 0, dim_size: int | None = None):
        size = list(src.shape)
        size[dim] = int(index.max()) + 1 if dim_size is None else dim_size
        return torch.zeros(size, dtype=src.dtype, device=src.device).index_add(dim, index, src)

    mod = types.ModuleType("torch_scatter")
    mod.scatter_add = scatter_add  # type: ignore[attr-defined]
    sys.modules.setdefault("torch_scatter", mod)


def fresh_full_sort_predict(model: Any) -> None:
    """Score from a full-graph forward pass at evaluation instead of the cached vectors."""
    import torch

    cls = type(model)

    def predict(self: Any, interaction: Any) -> torch.Tensor:
        # No side effect on training: keep the RNG (CM3 draws its mixing here) and
        # LIRDRec's copied attention as the last training batch left them.
        rng = torch.get_rng_state()
        fusion = getattr(self, "fusion_module", None)
        last_att = fusion.last_att if fusion is not None else None
        with torch.no_grad():
            out = self.forward(self.norm_adj)
        torch.set_rng_state(rng)
        if fusion is not None:
            fusion.last_att = last_att
        u, i = out[0], out[1]
        if type(self).__name__ == "CM3":  # its forward returns normalised vectors
            u, i = self.result_embed[: self.n_users], self.result_embed[self.n_users :]
        return u[interaction[0]] @ i.T

    cls.full_sort_predict = predict


def fast_mmd(model: Any) -> None:
    """MambaRec's ``mmd_loss`` without the (n, n, d) broadcast (same formula)."""
    import torch
    import torch.nn.functional as F

    def mmd_loss(self: Any, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, y = F.normalize(x, dim=1), F.normalize(y, dim=1)
        sigma = self.mmd_kernel_bandwidth

        def kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
            return torch.exp(-d.clamp_min(0) / (2 * sigma**2))

        return kernel(x, x).mean() + kernel(y, y).mean() - 2 * kernel(x, y).mean()

    type(model).mmd_loss = mmd_loss


def run(a: argparse.Namespace) -> dict[str, Any]:
    """One reference training as the command line asks (the flags of ``main``)."""
    model, dataset, seed, fresh_eval, fast = a.model, a.dataset, a.seed, a.fresh_eval, a.fast_mmd
    torch_scatter_stand_in()

    def patch(net: Any) -> None:
        if "result_embed" in net._parameters:  # CM3 on a CPU (see the module docstring)
            del net._parameters["result_embed"]
            net.result_embed = None
        if fresh_eval:
            fresh_full_sort_predict(net)
        if fast and hasattr(net, "mmd_loss"):
            fast_mmd(net)

    r = fit_reference(
        a.src.resolve(),
        a.data_path.resolve(),
        dataset,
        model,
        seed,
        json.loads(a.config),
        extra_config={"model": model, "dataset": dataset},
        patch_net=patch,
    )
    return {
        "model": model,
        "seed": seed,
        "fresh_eval": fresh_eval,
        "fast_mmd": fast,
        **{k: r[k] for k in ("best_valid", "best_epoch", "epochs")},
        "valid": {k.lower(): v for k, v in r["valid"].items()},
        "test": {k.lower(): v for k, v in r["test"].items()},
        **{k: r[k] for k in ("train_seconds_per_epoch", "wall_seconds", "threads")},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, required=True, help="the checkout's src/ folder")
    ap.add_argument("--data-path", type=Path, required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--model", required=True, help="CM3, LIRDRec or MambaRec")
    ap.add_argument("--seed", type=int, default=999)
    ap.add_argument("--config", default="{}", help="JSON of config overrides")
    ap.add_argument("--fresh-eval", action="store_true")
    ap.add_argument("--fast-mmd", action="store_true")
    ap.add_argument("--extra-path", type=Path, action="append", default=[], help="prepended to sys.path")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    for p in a.extra_path:
        sys.path.insert(0, str(p.resolve()))
    import torch

    torch.set_num_threads(a.threads)
    logging.basicConfig(level=logging.WARNING)
    result = run(a)
    print_result(result, a.out)


if __name__ == "__main__":
    main()
