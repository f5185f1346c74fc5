#!/usr/bin/env python3
"""experiments/real_model_report.py — the report of the real-model studies (byte-level Qwen2,
held-out English text): Markdown plus PNG plots, every number computed from the sweep files.

Inputs (each may be missing; its section then says which file and how to make it):
  --nll FILE         sweep "real-nll" (`resa sweep real-nll`): prompt 1024, 3072 teacher-forced
                     decode steps, grid f x ratio, seeds = held-out passages, last = 0.
  --lm FILE          sweep "real-lm" (`resa sweep real-lm`): the paper's §3.3 protocol, f in
                     {0, 1, 32}, ratio 1/10, run attribute `last` = x (the last x steps sparse).
  --model-eval FILE  models/resa-byte-qwen2/eval.json (scripts/train_model.py).
  --out DIR          default experiments/reports/real-model.
Outputs: DIR/REPORT.md and DIR/{concentration,lm_protocol,nll,nll_position,misalignment}.png;
DIR/notes.md (hand-written, never written here), if present, goes verbatim under "Reading the
results". Sweep layout: experiments/README.md.

Test: /usr/bin/python3 experiments/real_model_report.py --self-test   (h5py, numpy, matplotlib)
"""
import argparse
import json
import math
import sys
import tempfile
from fractions import Fraction
from pathlib import Path

import h5py
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

LN2 = math.log(2.0)
FINAL = 32              # §3.3: accuracy / NLL over the final 32 steps of each run
SMOOTH = 256            # moving-average window (steps) of nll_position.png
FOCUS_RATIO = "1/10"    # ratio of the per-step plots and per-layer tables
FOCUS_F = (8, 32, 128)  # ReSA periods drawn beside sparse in the per-step plots
HOW = {"nll": "resa sweep real-nll", "lm": "resa sweep real-lm",
       "eval": "python3 scripts/train_model.py --corpus data/corpus --out models/resa-byte-qwen2"}


def _s(v):
    """HDF5 attribute/dataset value as str (bytes are decoded)."""
    return v.decode() if isinstance(v, bytes) else str(v)


class Run:
    """One /runs/<key> group, reduced to what the report uses (per-step series)."""

    def __init__(self, key, g):
        a = g.attrs
        self.mode, self.seed = _s(a["mode"]), int(a["seed"])
        self.f, self.ratio, self.last = int(a["f"]), _s(a["ratio"]), int(a["last"])
        self.nll = g["nll"][()].astype(float)
        self.steps = len(self.nll)
        self.step = g["step"][()]
        self.top3 = g["top3_hit"][()].astype(float)
        # k_err [S][layer][kv_head] -> mean over layers and KV heads per step
        self.k_err = g["k_err"][()].reshape(len(self.nll), -1).mean(axis=1)
        # recall [S][layer][head] -> [S][layer], mean over heads
        self.recall = g["recall"][()].mean(axis=2)
        # top_block_mass [S][layer][head]: only the dense run's is used; kept as a sum over steps
        t = g["top_block_mass"][()] if self.mode == "dense" else None
        self.tbm_sum, self.tbm_n = (None, 0) if t is None else (t.sum(axis=0), t.shape[0])


class Sweep:
    """A sweep file: root attributes, spec text and its runs."""

    def __init__(self, path):
        self.path = path
        with h5py.File(path, "r") as f:
            self.attrs = {k: _s(v) for k, v in f.attrs.items()}
            self.spec = _s(f["spec"][()]) if "spec" in f else ""
            runs = f["runs"] if "runs" in f else {}
            self.runs = [Run(k, runs[k]) for k in sorted(runs)
                         if "nll" in runs[k] and runs[k]["nll"].shape[0] > 0]
        self.complete = self.attrs.get("complete", "0") == "1"
        self.dense = {r.seed: r for r in self.runs if r.mode == "dense"}
        self.sparse = [r for r in self.runs if r.mode != "dense" and r.seed in self.dense]
        self.ratios = sorted({r.ratio for r in self.sparse}, key=Fraction)
        # ratio of the per-step plots and per-layer tables: 1/10, else the sweep's first
        self.focus = FOCUS_RATIO if FOCUS_RATIO in self.ratios else (self.ratios or [FOCUS_RATIO])[0]

    def note(self):
        """A warning line for sections built from an incomplete file."""
        return [] if self.complete else [f"> **Incomplete sweep**: `{self.path}` has complete = 0; the numbers "
                                         f"below use the {len(self.runs)} runs present.", ""]


def missing(what, path, how):
    return [f"*{what}: not available — file `{path}` is missing; make it with `{how}`.*", ""]


def mean(v):
    """Mean, nan when empty."""
    return float(np.mean(v)) if len(v) else float("nan")


def se(v):
    """Standard error over seeds (nan with fewer than two)."""
    return float(np.std(v, ddof=1) / math.sqrt(len(v))) if len(v) >= 2 else float("nan")


def num(v, d=3, sign=False):
    return "n/a" if v is None or not np.isfinite(v) else f"{v:+.{d}f}" if sign else f"{v:.{d}f}"


def pm(m, s, d=3):
    return num(m, d, True) + (f" ± {s:.{d}f}" if np.isfinite(s) else "")


def label(f):
    return "sparse (f=0)" if f == 0 else "decode-only (f=1)" if f == 1 else f"ReSA (f={f})"


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows] + [""]


def savefig(fig, out, name):
    fig.tight_layout()
    fig.savefig(Path(out) / name, dpi=120)
    plt.close(fig)
    return [f"![{name}]({name})", ""]


def style(ax, **kw):
    """Axis labels/title (kw for ax.set), a light grid and the legend."""
    ax.set(**kw)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def nll_cells(sw):
    """(f, ratio) -> runs, pooled bits/byte, pooled Δ vs dense, SE over seeds of the per-seed Δ, and the
    per-step Δ series averaged over seeds (bits). Only runs with last = 0 (whole decode sparse); each run
    is compared with its seed's dense run over the steps both have."""
    groups = {}
    for r in sw.sparse:
        if r.last == 0:
            d = sw.dense[r.seed]
            n = min(len(r.nll), len(d.nll))
            groups.setdefault((r.f, r.ratio), []).append((r, r.nll[:n] / LN2, (r.nll[:n] - d.nll[:n]) / LN2))
    cells = {}
    for k, v in groups.items():
        diffs = [x for _, _, x in v]
        m = min(len(x) for x in diffs)
        cells[k] = {"runs": [r for r, _, _ in v], "bits": np.concatenate([b for _, b, _ in v]).mean(),
                    "delta": np.concatenate(diffs).mean(), "se": se([x.mean() for x in diffs]),
                    "mean_series": np.mean([x[:m] for x in diffs], axis=0)}
    return cells


def lm_cells(sw):
    """(f, ratio, x) -> per-seed top-3 / NLL bits over the final FINAL steps, run and dense."""
    cells = {}
    for r in sw.sparse:
        d = sw.dense[r.seed]
        n = min(len(r.nll), len(d.nll))
        sl = slice(max(0, n - FINAL), n)
        c = cells.setdefault((r.f, r.ratio, r.last or r.steps), {"t3": [], "t3d": [], "nll": [], "nlld": []})
        c["nll"].append(r.nll[sl].mean() / LN2)
        c["nlld"].append(d.nll[sl].mean() / LN2)
        c["t3"].append(r.top3[sl].mean())
        c["t3d"].append(d.top3[sl].mean())
    for c in cells.values():
        for k in ("t3", "nll"):
            diff = np.subtract(c[k], c[k + "d"])
            c[k + "_m"], c[k + "_dm"], c[k + "_diff"], c[k + "_se"] = (
                mean(c[k]), mean(c[k + "d"]), mean(diff), se(diff))
    return cells


def sec_header(inputs, eval_path):
    L = ["# Real-model report: Rectified Sparse Attention on the byte-level Qwen2", "",
         "Generated by `experiments/real_model_report.py`; every number below is computed from the files "
         "listed here.", ""]
    rows, specs = [], []
    for name, path, sw in inputs:
        if sw is None:
            rows.append([name, f"`{path}`", "missing", "", "", "", ""])
            continue
        a = sw.attrs
        rows.append([name, f"`{path}`", "complete" if sw.complete else "**incomplete** (complete = 0)",
                     a.get("git_commit", "?"), a.get("version", "?"), a.get("created", "?"),
                     f"{len(sw.runs)} ({len(sw.dense)} dense)"])
        if sw.spec:
            specs += [f"<details><summary>spec of {name} (<code>{path}</code>)</summary>", "", "```toml",
                      sw.spec.rstrip(), "```", "", "</details>", ""]
    rows.append(["model eval", f"`{eval_path}`", "present" if Path(eval_path).is_file() else "missing"] + [""] * 4)
    return L + table(["input", "file", "status", "git_commit", "version", "created", "runs"], rows) + specs


def sec_model(path):
    L = ["## 1. Model", ""]
    if not path or not Path(path).is_file():
        return L + missing("Model evaluation", path, HOW["eval"])
    e = json.loads(Path(path).read_text())
    b, s = e.get("baselines", {}), e.get("settings", {})
    g = lambda d, k: d.get(k, "n/a")  # noqa: E731
    rows = [["parameters", f"{e['parameters']:,}" if "parameters" in e else "n/a"],
            ["shape", f"{g(s, 'layers')} layers, hidden {g(s, 'hidden')}, {g(s, 'heads')} query heads, "
                      f"{g(s, 'kv_heads')} KV head(s)"],
            ["training tokens", f"{e['tokens_seen']:,}" if "tokens_seen" in e else "n/a"],
            ["training time", f"{e['train_seconds']:.1f} s" if "train_seconds" in e else "n/a"],
            ["device", g(e, "device")],
            ["model (held-out)", f"{num(e.get('heldout_bits_per_byte'))} bits/byte"],
            ["byte bigram baseline", f"{num(b.get('bigram_bits_per_byte'))} bits/byte"],
            ["byte unigram baseline", f"{num(b.get('unigram_bits_per_byte'))} bits/byte"]]
    return L + table(["", f"`{path}`"], rows)


def sec_concentration(sources, out):
    L = ["## 2. Attention concentration (dense runs)", "",
         "Share of each head's full attention mass (softmax over the whole cache) held by the top 10% of "
         "16-token blocks, `top_block_mass` of the dense runs: per layer the mean over steps, heads and seeds, "
         "with the minimum and maximum over heads (each head's mean over steps and seeds). "
         "Uniform attention would give 0.10.", ""]
    if not sources:
        return L + ["*No sweep file available (`resa sweep real-nll`, `resa sweep real-lm`).*", ""]
    data = {}
    for name, sw in sources:
        runs = list(sw.dense.values())
        if not runs:
            L += [f"*No dense runs in `{sw.path}`.*", ""]
            continue
        L += sw.note()
        data[name] = sum(r.tbm_sum for r in runs) / sum(r.tbm_n for r in runs)  # [layer][head]
    if not data:
        return L
    nl = max(m.shape[0] for m in data.values())
    rows = [[l] + [f"{m[l].mean():.3f} ({m[l].min():.3f}–{m[l].max():.3f})" if l < m.shape[0] else "n/a"
                   for m in data.values()] for l in range(nl)]
    L += table(["layer"] + [f"{n}: mean (min–max over heads)" for n in data], rows)
    fig, ax = plt.subplots(figsize=(7, 4))
    w = 0.8 / len(data)
    for i, (n, m) in enumerate(data.items()):
        x = np.arange(m.shape[0]) + (i - (len(data) - 1) / 2) * w
        mu = m.mean(axis=1)
        ax.bar(x, mu, w, label=n, yerr=[mu - m.min(axis=1), m.max(axis=1) - mu], capsize=3)
    ax.axhline(0.10, color="k", ls="--", lw=1, label="uniform (0.10)")
    ax.set_xticks(range(nl))
    style(ax, xlabel="layer", ylabel="attention mass in top 10% of blocks", ylim=(0, 1),
          title="Attention concentration (dense; bars: min–max over heads)")
    return L + savefig(fig, out, "concentration.png")


def sec_lm(sw, path, out):
    L = ["## 3. Language-modelling protocol (§3.3)", ""]
    if sw is None:
        return L + missing("The §3.3 protocol", path, HOW["lm"])
    cells = lm_cells(sw)
    if not cells:
        return L + sw.note() + [f"*No sparse runs with a matching dense run in `{path}`.*", ""]
    # modes (f, ratio) ordered sparse (f=0), ReSA (f>1), decode-only (f=1)
    modes = sorted({(f, r) for f, r, _ in cells}, key=lambda m: (m[0] == 1, m[0], Fraction(m[1])))
    xs = sorted({x for _, _, x in cells})
    L += sw.note() + [
        f"Each run decodes its last x steps sparsely (dense before). Scored over the final {FINAL} steps of "
        f"each run, pooled over {len(sw.dense)} seed(s); dense's score over the same steps is the same for every x. "
        "In brackets (and the plot's error bars): mean over seeds of the per-seed difference to dense ± its "
        "standard error over seeds.", ""]
    multi = len({r for _, r in modes}) > 1
    name = lambda m: label(m[0]) + (f", ratio {m[1]}" if multi else "")  # noqa: E731
    get = lambda m, x: cells.get((m[0], m[1], x))  # noqa: E731
    first = lambda x, k: next((c[k] for m in modes if (c := get(m, x)) and np.isfinite(c[k])),  # noqa: E731
                              float("nan"))  # dense's value in row x
    rows = [[x, num(first(x, "t3_dm"))] + [
        f"{num(c['t3_m'])} ({pm(c['t3_diff'], c['t3_se'])})" if (c := get(m, x)) else "n/a"
        for m in modes] for x in xs]
    L += [f"Top-3 next-token accuracy (target among the 3 largest logits), final {FINAL} steps:", ""]
    L += table(["x", "dense"] + [name(m) for m in modes], rows)
    rows = [[x, num(first(x, "nll_dm"))] + [pm(c["nll_diff"], c["nll_se"]) if (c := get(m, x)) else "n/a"
                                            for m in modes] for x in xs]
    L += [f"NLL in bits over the final {FINAL} steps: dense, and each mode's ΔNLL vs dense:", ""]
    L += table(["x", "dense (bits)"] + [f"Δ {name(m)}" for m in modes], rows)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))

    def bars(errs):  # no error bars with a single seed (every SE is nan)
        return errs if any(np.isfinite(e) for e in errs) else None

    for m in modes:
        xm = [x for x in xs if get(m, x)]
        axes[0].errorbar(xm, [get(m, x)["t3_m"] for x in xm], bars([get(m, x)["t3_se"] for x in xm]),
                         marker="o", capsize=3, label=name(m))
        axes[1].errorbar(xm, [get(m, x)["nll_diff"] for x in xm], bars([get(m, x)["nll_se"] for x in xm]),
                         marker="o", capsize=3, label=name(m))
    axes[0].axhline(mean([first(x, "t3_dm") for x in xs]), color="k", ls="--", lw=1, label="dense")
    axes[1].axhline(0, color="k", ls="--", lw=1, label="dense")
    for ax, what in zip(axes, ("top-3 accuracy", "ΔNLL vs dense [bits]")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [str(x) for x in xs])
        style(ax, xlabel="x = number of final steps decoded sparsely", ylabel=f"{what}, final {FINAL} steps",
              title=f"§3.3 protocol: {what}")
    return L + savefig(fig, out, "lm_protocol.png")


def sec_nll(sw, path, cells, out):
    L = ["## 4. Teacher-forced NLL", ""]
    if sw is None:
        return L + missing("Teacher-forced NLL", path, HOW["nll"])
    L += sw.note()
    if not cells:
        return L + [f"*No sparse runs with last = 0 and a matching dense run in `{path}`.*", ""]
    ratios, fs = sw.ratios, sorted({f for f, _ in cells})
    dense_bits = sum(r.nll.sum() for r in sw.dense.values()) / sum(len(r.nll) for r in sw.dense.values()) / LN2
    L += [f"Bits per byte = mean NLL / ln 2 over all decode steps, pooled over {len(sw.dense)} seed(s). "
          f"Dense: **{dense_bits:.3f}** bits/byte.", ""]
    rows = [["dense"] + [num(dense_bits)] * len(ratios)]
    rows += [[label(f)] + [num(cells[(f, r)]["bits"]) if (f, r) in cells else "n/a" for r in ratios] for f in fs]
    L += table(["bits/byte"] + [f"ratio {r}" for r in ratios], rows)
    rows = [[label(f)] + [pm(cells[(f, r)]["delta"], cells[(f, r)]["se"]) if (f, r) in cells else "n/a"
                          for r in ratios] for f in fs]
    L += ["ΔNLL vs dense (bits/byte; ± standard error over seeds of the per-seed difference):", ""]
    L += table(["ΔNLL"] + [f"ratio {r}" for r in ratios], rows)
    # nll.png: ΔNLL vs f (log axis), sparse as a separate marker at the left
    pos = [f for f in fs if f > 0]
    x0 = (min(pos) / 2) if pos else 1
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in ratios:
        p = [f for f in pos if (f, r) in cells]
        line = ax.plot(p, [cells[(f, r)]["delta"] for f in p], marker="o", label=f"ratio {r}")[0]
        if (0, r) in cells:
            ax.plot([x0], [cells[(0, r)]["delta"]], marker="s", ms=8, ls="none", color=line.get_color())
    ax.axhline(0, color="k", ls="--", lw=1)
    ax.set_xscale("log", base=2)
    ax.set_xticks([x0] + pos, ["sparse\n(f=0)"] + [str(f) for f in pos])
    style(ax, xlabel="rectification period f", ylabel="ΔNLL vs dense [bits/byte]",
          title="Teacher-forced ΔNLL vs dense (square: sparse, no rectification)")
    L += savefig(fig, out, "nll.png")

    # nll_position.png: ΔNLL vs decode step, moving average
    fr = sw.focus
    fig, ax = plt.subplots(figsize=(8, 4.5))
    w = SMOOTH
    for f in [0, *FOCUS_F]:
        if (f, fr) in cells:
            x = cells[(f, fr)]["mean_series"]
            w = max(1, min(SMOOTH, len(x)))  # short runs: the whole run
            ma = np.convolve(x, np.ones(w) / w, mode="valid")
            ax.plot(np.arange(len(ma)) + (w - 1) / 2, ma, label=label(f))
    ax.axhline(0, color="k", ls="--", lw=1)
    style(ax, xlabel="decode step", ylabel=f"ΔNLL vs dense [bits/byte], moving average over {w} steps",
          title=f"ΔNLL vs decode position (ratio {fr}, mean over seeds)")
    return L + savefig(fig, out, "nll_position.png")


def sec_kv(sw, path, cells, out):
    """Sections 5 (KV misalignment) and 6 (recall of the block selection), from the real-nll runs."""
    L5, L6 = ["## 5. KV misalignment", ""], ["## 6. Recall of the block selection", ""]
    if sw is None:
        return L5 + missing("KV misalignment", path, HOW["nll"]) + L6 + missing("Recall", path, HOW["nll"])
    if not cells:
        msg = [f"*No sparse runs with last = 0 and a matching dense run in `{path}`.*", ""]
        return L5 + sw.note() + msg + L6 + msg
    fr, seed, order = sw.focus, min(sw.dense), lambda kv: (kv[0][0], Fraction(kv[0][1]))
    L5 += sw.note() + ["K cache error vs dense (relative Frobenius, mean over layers and KV heads per step); "
                       "mean / peak / final over the decode steps, averaged over seeds:", ""]
    stats = (np.mean, np.max, lambda k: k[-1])
    L5 += table(["mode", "ratio", "k_err mean", "k_err peak", "k_err final"],
                [[label(f), r] + [num(mean([fn(run.k_err) for run in c["runs"]]), 4) for fn in stats]
                 for (f, r), c in sorted(cells.items(), key=order)])
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for f in [0, *FOCUS_F]:  # the first seed's per-step series: sparse climbs, ReSA saw-tooths
        for run in (x for x in cells.get((f, fr), {"runs": []})["runs"] if x.seed == seed):
            ax.plot(run.step, run.k_err, lw=1, label=label(f))
    style(ax, xlabel="decode step", ylabel="K cache error vs dense (relative Frobenius)",
          title=f"KV misalignment (ratio {fr}, seed {seed})")
    L5 += savefig(fig, out, "misalignment.png")
    ratios, fs = sw.ratios, sorted({f for f, _ in cells})
    L6 += sw.note() + ["Share of the run's full attention mass inside the blocks it selected; mean over steps, "
                       "layers, heads and seeds:", ""]
    rec = {k: mean([r.recall.mean() for r in c["runs"]]) for k, c in cells.items()}
    L6 += table(["recall"] + [f"ratio {r}" for r in ratios],
                [[label(f)] + [num(rec.get((f, r))) for r in ratios] for f in fs])
    cols = [f for f in (0, 32) if (f, fr) in cells]
    if cols:
        per = {f: np.mean([r.recall.mean(axis=0) for r in cells[(f, fr)]["runs"]], axis=0) for f in cols}
        L6 += [f"Per layer, ratio {fr}:", ""] + table(
            ["layer"] + [label(f) for f in cols],
            [[l] + [num(per[f][l]) for f in cols] for l in range(min(len(p) for p in per.values()))])
    return L5 + L6


def sec_checks(nll_sw, ncells, lm_sw, lcells):
    L = ["## 7. Checks against the paper's claims", "",
         "Numbers only; the interpretation is in \"Reading the results\" (notes.md).", ""]
    # (a) sparse degradation with length
    L += ["**(a) Sparse decoding degrades with length.**", ""]
    if nll_sw is not None and (0, nll_sw.focus) in ncells:
        fr = nll_sw.focus
        s = ncells[(0, fr)]["mean_series"]
        t = max(1, len(s) // 3)
        L += [f"- Teacher-forced (ratio {fr}): sparse ΔNLL vs dense over the first third of the decode steps "
              f"(steps 0–{t - 1}): {num(s[:t].mean(), sign=True)} bits/byte; over the last third "
              f"(steps {len(s) - t}–{len(s) - 1}): {num(s[-t:].mean(), sign=True)} bits/byte."]
    else:
        L += ["- Teacher-forced: not available (needs sparse f=0 runs in the real-nll sweep)."]
    sp = sorted((x, c) for (f, r, x), c in lcells.items() if f == 0 and c["t3"]) if lm_sw else []
    if len(sp) >= 2:
        (x0, c0), (x1, c1) = sp[0], sp[-1]
        L += [f"- §3.3 protocol: sparse top-3 accuracy over the final {FINAL} steps at x = {x1}: {num(c1['t3_m'])} "
              f"(dense {num(c1['t3_dm'])}, Δ {pm(c1['t3_diff'], c1['t3_se'])}); at x = {x0}: {num(c0['t3_m'])} "
              f"(dense {num(c0['t3_dm'])}, Δ {pm(c0['t3_diff'], c0['t3_se'])})."]
    else:
        L += ["- §3.3 protocol: not available (needs sparse runs with `top3_hit` at two or more x in real-lm)."]
    ratios = nll_sw.ratios if nll_sw else []
    # (b) f = 32 near dense
    L += ["", "**(b) f = 32 stays near dense.** ΔNLL vs dense (bits/byte, teacher-forced):", ""]
    rows = [[r, num(ncells[(32, r)]["delta"], sign=True), num(ncells[(0, r)]["delta"], sign=True),
             num(ncells[(32, r)]["delta"] / ncells[(0, r)]["delta"])]
            for r in ratios if (32, r) in ncells and (0, r) in ncells]
    L += table(["ratio", "ΔNLL f=32", "ΔNLL sparse (f=0)", "f=32 / sparse"], rows) if rows else ["- n/a", ""]
    # (c) f = 128 keeps most of the gain
    L += ["**(c) f = 128 keeps most of the gain.** Share of sparse's ΔNLL removed, "
          "1 − ΔNLL(f) / ΔNLL(sparse):", ""]
    share = lambda f, r: 100 * (1 - ncells[(f, r)]["delta"] / ncells[(0, r)]["delta"])  # noqa: E731
    rows = [[r, f"{share(128, r):.1f}%", f"{share(32, r):.1f}%"]
            for r in ratios if all((f, r) in ncells for f in (0, 32, 128))]
    L += table(["ratio", "removed by f=128", "removed by f=32"], rows) if rows else ["- n/a", ""]
    return L


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--nll", default="results/real-nll.h5", help="real-nll sweep file")
    p.add_argument("--lm", default="results/real-lm.h5", help="real-lm sweep file (§3.3 protocol)")
    p.add_argument("--model-eval", default="models/resa-byte-qwen2/eval.json")
    p.add_argument("--out", default="experiments/reports/real-model")
    p.add_argument("--self-test", action="store_true", help="run the self-test and exit")
    a = p.parse_args(argv)
    if a.self_test:
        return self_test()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    nll_sw, lm_sw = (Sweep(p) if p and Path(p).is_file() else None for p in (a.nll, a.lm))
    ncells = nll_cells(nll_sw) if nll_sw else {}
    lcells = lm_cells(lm_sw) if lm_sw else {}
    sources = [(n, s) for n, s in (("real-nll", nll_sw), ("real-lm", lm_sw)) if s is not None]
    L = (sec_header([("real-nll", a.nll, nll_sw), ("real-lm", a.lm, lm_sw)], a.model_eval)
         + sec_model(a.model_eval) + sec_concentration(sources, out) + sec_lm(lm_sw, a.lm, out)
         + sec_nll(nll_sw, a.nll, ncells, out) + sec_kv(nll_sw, a.nll, ncells, out)
         + sec_checks(nll_sw, ncells, lm_sw, lcells))
    notes = out / "notes.md"
    if notes.is_file():
        L += ["## Reading the results", "", notes.read_text().rstrip(), ""]
    (out / "REPORT.md").write_text("\n".join(L))
    print(f"wrote {out / 'REPORT.md'}")
    return 0


def _write_sweep(path, spec_name, runs, complete=1):
    """runs: list of (key, attrs, datasets). Writes the sweep-file layout (root attrs, /spec, /sweep, /runs)."""
    with h5py.File(path, "w") as f:
        f.attrs.update({"format": "resa-sweep", "complete": complete, "git_commit": "abc123def456",
                        "version": "0.1.0", "created": "2026-01-01T00:00:00Z", "spec_name": spec_name})
        f["spec"] = np.bytes_(f'name = "{spec_name}"\nsteps = 0\n')
        dt = [("key", "S80"), ("seed", "u8"), ("mode", "S8"), ("ratio", "S8"), ("f", "i4"), ("last", "i8")]
        f["sweep"] = np.array([(k, a["seed"], a["mode"], a["ratio"], a["f"], a["last"]) for k, a, _ in runs], dt)
        for key, attrs, data in runs:
            g = f.create_group(f"runs/{key}")
            g.attrs.update(attrs)
            for name, v in data.items():
                g[name] = v


def _run(seed, mode, f, ratio, last, S, nll_bits, top3, k_err, recall, tbm=None):
    """(key, attrs, datasets) of one synthetic run; 2 layers, 2 heads, 1 KV head."""
    key = f"dense_s{seed}" if mode == "dense" else \
        f"s{seed}_b16_r{ratio.replace('/', '-')}_nmin2_nloc1_nsink0_f{f}" + (f"_last{last}" if last else "")
    attrs = {"mode": mode, "seed": seed, "f": f, "ratio": ratio, "b": 16, "last": last, "steps": S}
    d = {"step": np.arange(S), "nll": np.asarray(nll_bits, float) * LN2, "top3_hit": np.asarray(top3, np.uint8),
         "k_err": np.repeat(np.asarray(k_err, float)[:, None, None], 2, axis=1),
         "recall": np.broadcast_to(np.asarray(recall, float)[None, :, None], (S, 2, 2)).copy()}
    if tbm is not None:
        d["top_block_mass"] = np.broadcast_to(np.asarray(tbm, float)[None], (S, 2, 2)).copy()
    return key, attrs, d


def self_test():
    results = []

    def check(cond, what):
        results.append(bool(cond))
        if not cond:
            print(f"FAIL: {what}")

    TBM = [[0.3, 0.5], [0.2, 0.2]]  # dense top_block_mass [layer][head] -> layer 0: 0.400 (0.300–0.500)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # real-nll: dense 1.5 bits/byte; run Δ = base[f] * scale[ratio] ± 0.01 by seed (SE exactly 0.010)
        S = 48
        base = {0: 0.5, 8: 0.05, 16: 0.075, 32: 0.1, 64: 0.2, 128: 0.25}
        scale = {"1/20": 2.0, "1/10": 1.0, "1/5": 0.5}
        runs = []
        for seed in (0, 1):
            runs.append(_run(seed, "dense", 0, "1/10", 0, S, [1.5] * S, [1] * S, [0] * S, [1, 1], TBM))
            for f in base:
                for r in scale:
                    ke = np.arange(S) * 1e-3 if f == 0 else (np.arange(S) % f) * 1e-3
                    runs.append(_run(seed, "sparse" if f == 0 else "resa", f, r, 0, S,
                                     [1.5 + base[f] * scale[r] + (0.01 if seed == 0 else -0.01)] * S, [1] * S, ke,
                                     [0.5, 0.7] if f == 0 else [0.8, 0.8]))
        _write_sweep(tmp / "nll.h5", "real-nll", runs)
        # real-lm: 64 steps, x in {32, 64}; dense top-3 = 1, NLL 1 bit. Sparse x=32: 26 / 22 hits in the
        # final 32 (seeds 0/1) -> 0.750; its final-32 NLL 1.25 bits -> Δ +0.250. Incomplete (complete = 0).
        S, runs = 64, []
        for seed in (0, 1):
            runs.append(_run(seed, "dense", 0, "1/10", 0, S, [1.0] * S, [1] * S, [0] * S, [1, 1], TBM))
            for f, hits in ((0, (26, 22)), (1, (32, 32)), (32, (28, 28))):
                for x in (32, 64):
                    h = hits[seed] - (8 if x == 64 else 0)
                    t3 = [1] * (S - 32) + [1] * h + [0] * (32 - h)
                    nb = [1.0] * (S - x) + [1.25 if f == 0 else 1.0] * x
                    runs.append(_run(seed, "sparse" if f == 0 else "resa", f, "1/10", x, S, nb, t3, [0] * S, [1, 1]))
        _write_sweep(tmp / "lm.h5", "real-lm", runs, complete=0)
        (tmp / "eval.json").write_text(json.dumps({
            "heldout_bits_per_byte": 1.25, "parameters": 1234567, "tokens_seen": 1000, "train_seconds": 12.5,
            "device": "TestGPU", "baselines": {"unigram_bits_per_byte": 4.5, "bigram_bits_per_byte": 3.5},
            "settings": {"layers": 2, "hidden": 64, "heads": 2, "kv_heads": 1}}))
        out = tmp / "report"
        out.mkdir()
        (out / "notes.md").write_text("SENTINEL hand-written notes.\n")
        rc = main(["--nll", str(tmp / "nll.h5"), "--lm", str(tmp / "lm.h5"),
                   "--model-eval", str(tmp / "eval.json"), "--out", str(out)])
        check(rc == 0, "main returns 0")
        md = (out / "REPORT.md").read_text()
        expect = [f"## {i}. " for i in range(1, 8)] + [  # each computable from the construction above
            "## Reading the results", "SENTINEL hand-written notes.", "<details>", "abc123def456",
            "1,234,567", "| model (held-out) | 1.250 bits/byte |", "| byte bigram baseline | 3.500 bits/byte |",
            "| 0 | 0.400 (0.300–0.500) | 0.400 (0.300–0.500) |", "Uniform attention would give 0.10",
            "| 32 | 1.000 | 0.750 (-0.250", "| 64 | 1.000 | 0.500 (-0.500", "| 32 | 1.000 | +0.250",
            "**incomplete** (complete = 0)", "Incomplete sweep", "Dense: **1.500** bits/byte",
            "| sparse (f=0) | 2.500 | 2.000 | 1.750 |", "| sparse (f=0) | +1.000 ± 0.010 | +0.500 ± 0.010 |",
            "| ReSA (f=128) | 2.000 | 1.750 | 1.625 |", "| sparse (f=0) | 1/10 | 0.0235 | 0.0470 | 0.0470 |",
            "| sparse (f=0) | 0.600 | 0.600 | 0.600 |", "| 0 | 0.500 | 0.800 |",
            "| 1/10 | +0.100 | +0.500 | 0.200 |", "| 1/10 | 50.0% | 80.0% |",
            "at x = 64: 0.500 (dense 1.000", "at x = 32: 0.750"]
        for s in expect:
            check(s in md, f"REPORT.md contains {s!r}")
        for png in ("concentration", "lm_protocol", "nll", "nll_position", "misalignment"):
            check((out / f"{png}.png").is_file() and (out / f"{png}.png").stat().st_size > 1000, f"{png}.png written")
        # Missing inputs: a report, no crash, with the make-it commands.
        out2 = tmp / "report2"
        rc = main(["--nll", str(tmp / "none.h5"), "--lm", str(tmp / "none2.h5"),
                   "--model-eval", str(tmp / "none.json"), "--out", str(out2)])
        md = (out2 / "REPORT.md").read_text()
        check(rc == 0 and "resa sweep real-nll" in md and "resa sweep real-lm" in md
              and "train_model.py" in md and "## Reading the results" not in md, "missing inputs reported")
    bad = results.count(False)
    print(f"real_model_report self-test: {len(results) - bad} passed, {bad} failed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
