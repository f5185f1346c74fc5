#!/usr/bin/env python3
"""tests/sim/check_study_h5py.py RESA WORKDIR — writes a small study with `resa simulate` and opens
it with h5py (attributes, completion flags), pandas (the /summary table) and xarray via h5netcdf
(named dimensions from the dimension scales). Exit 77 (ctest: skipped) when those packages are
missing; scripts/setup.sh installs them (python3-h5py, python3-pandas, python3-xarray,
python3-h5netcdf)."""
import os
import subprocess
import sys

try:
    import h5py
    import pandas as pd
    import xarray as xr
except ImportError as e:  # pragma: no cover
    print(f"SKIP: {e}")
    sys.exit(77)

resa, work = sys.argv[1], sys.argv[2]
os.makedirs(work, exist_ok=True)
path = os.path.join(work, "study.h5")
subprocess.run([resa, "simulate", "--output", path, "--overwrite", "--quiet", "--prompt-len", "200", "--steps", "24",
                "--ratio", "1/8", "--n-min", "2", "--run", "sparse", "--run", "resa:f=8"], check=True)

with h5py.File(path, "r") as f:
    for key in ("format", "tool", "version", "git_commit", "command_line", "config", "created"):
        assert key in f.attrs, key
    assert f.attrs["complete"] == 1
    assert "simulate" in f.attrs["command_line"]
    assert f["config"][()].decode() == f.attrs["config"]
    assert set(f["runs"].keys()) == {"dense", "sparse", "resa_f8"}
    for run in f["runs"].values():
        assert run.attrs["complete"] == 1
        k = run["k_err"]
        assert k.shape == (24, 4, 2) and k.maxshape[0] is None and k.chunks is not None
        assert k.compression == "gzip" and k.shuffle
        assert [d.label for d in k.dims] == ["step", "layer", "kv_head"] or [
            list(d.keys())[0] for d in k.dims] == ["step", "layer", "kv_head"]
    summary = pd.DataFrame(f["summary"][()])
summary["name"] = summary["name"].str.decode("utf-8")
assert list(summary["name"]) == ["dense", "sparse", "resa_f8"], summary
assert summary.loc[0, "k_err_max"] == 0.0
assert summary.loc[1, "k_err_mean"] > summary.loc[2, "k_err_mean"]

ds = xr.open_dataset(path, group="runs/resa_f8", engine="h5netcdf")
assert ds["k_err"].dims == ("step", "layer", "kv_head"), ds["k_err"].dims
assert ds["attn_err"].dims == ("step", "layer", "head")
assert int(ds.sizes["step"]) == 24
rect = ds["rectified"].values.astype(bool)
assert rect.sum() == 3
assert float(abs(ds["k_err"].values[rect]).max()) == 0.0
print(summary.to_string())
print(ds)
print("PASS")
