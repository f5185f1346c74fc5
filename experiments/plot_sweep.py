#!/usr/bin/env python3
"""experiments/plot_sweep.py SWEEP.h5 — the two plots of a sweep file (experiments/include/resa/
experiments/sweep.h), written next to it:

  <stem>_misalignment.png  relative Frobenius error of the whole K cache against dense over the
                           decode steps (mean over layers and KV heads), one line per f at the first
                           ratio/b of the grid: sparse (f = 0) climbs, ReSA draws a sawtooth that
                           rectification resets to zero every f steps.
  <stem>_tradeoff.png      quality against cost (attention bytes read relative to dense, measured)
                           for every combination of the grid: next-token KL(dense || mode) and the
                           mean K cache misalignment, each with its Pareto front (no other point
                           both cheaper and better) marked.

Needs Python 3 with h5py, numpy and matplotlib (Debian: python3-h5py python3-matplotlib).
Run by `resa sweep` and `resa report`; usable by hand.
"""
import sys
from pathlib import Path

import h5py
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def rows(f):
    t = f["sweep"][()]
    out = []
    for r in t:
        d = {k: (r[k].decode() if isinstance(r[k], bytes) else r[k].item()) for k in t.dtype.names}
        out.append(d)
    return out


def pareto(points):
    """Indices of points not dominated (lower cost and lower error are better)."""
    front = []
    for i, (c, e) in enumerate(points):
        if not any((c2 <= c and e2 <= e and (c2 < c or e2 < e)) for j, (c2, e2) in enumerate(points) if j != i):
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: plot_sweep.py SWEEP.h5")
    path = Path(sys.argv[1])
    stem = path.with_suffix("")
    with h5py.File(path, "r") as f:
        if f.attrs.get("format") != "resa-sweep" or int(f.attrs.get("complete", 0)) != 1:
            sys.exit(f"{path}: not a complete sweep file")
        table = rows(f)
        name = f.attrs.get("spec_name", path.stem)
        combos = [r for r in table if r["mode"] != "dense"]
        first_seed = min(r["seed"] for r in combos)
        ref = next(r for r in combos if r["seed"] == first_seed)
        same = [r for r in combos if r["seed"] == first_seed and r["b"] == ref["b"] and r["ratio"] == ref["ratio"]
                and r["n_min"] == ref["n_min"] and r["n_local"] == ref["n_local"] and r["n_sink"] == ref["n_sink"]]
        same.sort(key=lambda r: (r["f"] != 0, r["f"]))

        fig, ax = plt.subplots(figsize=(8, 4.5))
        for r in same:
            k = np.asarray(f["runs"][r["key"]]["k_err"][()], dtype=float)
            k = k.reshape(k.shape[0], -1).mean(axis=1)
            label = "sparse (f = 0)" if r["f"] == 0 else f"ReSA f = {r['f']}"
            ax.plot(np.arange(len(k)), k, label=label, lw=1.2)
        ax.set_xlabel("decode step")
        ax.set_ylabel("K cache error vs dense (relative Frobenius)")
        ax.set_title(f"{name}: KV misalignment over decode (b={ref['b']}, ratio={ref['ratio']}, seed {first_seed})")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(f"{stem}_misalignment.png", dpi=120)
        plt.close(fig)

        fig, axes = plt.subplots(1, 2, figsize=(13, 5))
        fs = sorted({r["f"] for r in combos})
        ratios = sorted({r["ratio"] for r in combos}, key=lambda x: float(x.split("/")[0]) / float(x.split("/")[1]))
        markers = "osD^vP*X"
        cmap = plt.get_cmap("viridis", max(2, len(fs)))
        for ax, metric, ylabel in ((axes[0], "kl_mean", "mean KL(dense || mode) of the next token [nats]"),
                                   (axes[1], "k_err_mean", "mean K cache error vs dense (relative Frobenius)")):
            for i, fv in enumerate(fs):
                for j, rv in enumerate(ratios):
                    sel = [r for r in combos if r["f"] == fv and r["ratio"] == rv]
                    if not sel:
                        continue
                    ax.scatter([r["bytes_rel"] for r in sel], [r[metric] for r in sel], color=cmap(i),
                               marker=markers[j % len(markers)], s=40, zorder=3,
                               label=("sparse (f = 0)" if fv == 0 else f"f = {fv}") + f", ratio {rv}")
            pts = [(r["bytes_rel"], r[metric]) for r in combos]
            front = pareto(pts)
            ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], "k--", lw=1, label="Pareto front",
                    zorder=2)
            ax.set_xlabel("attention bytes read / dense (measured)")
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
        axes[1].legend(fontsize=7, loc="best")
        fig.suptitle(f"{name}: quality vs cost across the grid (each point a combination; dashed: Pareto front)")
        fig.tight_layout()
        fig.savefig(f"{stem}_tradeoff.png", dpi=120)
        plt.close(fig)
    print(f"wrote {stem}_misalignment.png and {stem}_tradeoff.png")


if __name__ == "__main__":
    main()
