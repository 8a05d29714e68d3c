#!/usr/bin/python3
"""Plots a moeflow result file (flow, sgd, compare, verify or sweep) to a PNG. Called by `moeflow plot`.

Usage: plot.py FILE -o PNG [--log-time] [--observable NAME]

  flow     risk (log scale) and the best cosines per teacher (`m`, and `m_router` for gated;
           `m_abs` and the routing accuracy `routing` for cluster models
           models) against t, with the events as vertical lines and the stage boundaries shaded.
  sgd      the same for every seed (thin lines) and the median over the seeds (thick), with the
           median event times.
  compare  every event's time against d (log-log): the ODE median, the SGD median with its
           interquartile range, and the fitted exponents; the SGD-ODE overlap distance against d.
  verify   the model's run as for flow, with each check's PASS/FAIL/SKIP and measured numbers.
  sweep    the final risk against the first grid key, one line per combination of the other
           keys, each line's minimum marked (e.g. the best k for each s); event times likewise.

The PNG is written to a temporary file beside the target and renamed, so a failed plot never
leaves a partial file.
"""
import argparse
import os
import sys
import tempfile

try:
    import h5py
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: E402
    import numpy as np  # noqa: E402
except ImportError as e:  # exit 3: moeflow plot says what to install
    print(f"moeflow plot: error: {sys.executable} cannot import {e.name} (Debian's python3-h5py, "
          "python3-matplotlib and python3-numpy: bash scripts/install-deps.sh)", file=sys.stderr)
    sys.exit(3)


def text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


def series(group, name):
    """A (T, k) array of a scalar, vector or matrix observable (matrices flattened)."""
    data = group[name][:]
    return data.reshape(data.shape[0], -1)


def floor_risk(values):
    """Risk on a log axis: values below 1e-15 of the largest (round-off, or exactly 0) shown at that floor."""
    values = np.asarray(values, dtype=float)
    if not np.any(np.isfinite(values)):
        return values
    top = np.nanmax(values)
    return np.maximum(values, max(top, 1e-300) * 1e-15)


def events_of(group):
    out = []
    if "events" not in group:
        return out
    for name, ds in group["events"].items():
        t = float(ds[()])
        if np.isfinite(t):
            out.append((t, name))
    return sorted(out)


def mark_events(ax, events, log_time):
    for t, name in events:
        if log_time and t <= 0:
            continue
        ax.axvline(t, color="0.5", lw=0.6, ls=":")
    if len(events) <= 12:
        for t, name in events:
            if log_time and t <= 0:
                continue
            ax.text(t, 1.0, " " + name, rotation=90, va="top", ha="left", fontsize=6, color="0.3",
                    transform=ax.get_xaxis_transform())


def shade_stages(axes, group):
    if "stages" not in group or len(group["stages"]) < 2:
        return
    stages = sorted(((float(ds[()]), float(ds.attrs["t_end"]), name) for name, ds in group["stages"].items()))
    for i, (t0, t1, name) in enumerate(stages):
        for ax in axes:
            if i % 2:
                ax.axvspan(t0, t1, color="0.92", zorder=0)
        axes[0].text(0.5 * (t0 + t1) if t1 > t0 else t0, 0.02, name, fontsize=7, ha="center",
                     transform=axes[0].get_xaxis_transform())


def cosine_names(group):
    # Cluster models (Kawata et al.): the largest |cosine| (odd links learn a direction up to its sign)
    # and the routing accuracy per cluster.
    if "routing" in group or ("m_abs" in group and "clusters" in text(group.file.attrs.get("model", ""))):
        return [n for n in ("m_abs", "routing") if n in group]
    return [n for n in ("m", "m_router") if n in group]


def time_axes(log_time, rows):
    fig, axes = plt.subplots(rows, 1, figsize=(7, 2.6 * rows), sharex=True, squeeze=False)
    axes = axes[:, 0]
    for ax in axes:
        if log_time:
            ax.set_xscale("log")
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("t (= η·steps for SGD)")
    return fig, axes


def positive(t, *ys, log_time):
    if not log_time:
        return (t,) + ys
    keep = t > 0
    return (t[keep],) + tuple(y[keep] for y in ys)


def plot_flow(f, args):
    traj = f["trajectory"]
    names = cosine_names(traj)
    fig, axes = time_axes(args.log_time, 1 + len(names))
    t = traj["time"][:]
    tt, risk = positive(t, traj["risk"][:], log_time=args.log_time)
    axes[0].semilogy(tt, floor_risk(risk), color="k")
    axes[0].set_ylabel("risk")
    for ax, name in zip(axes[1:], names):
        values = series(traj, name)
        for j in range(values.shape[1]):
            tt, v = positive(t, values[:, j], log_time=args.log_time)
            ax.plot(tt, v, lw=1, label=f"{name}[{j}]" if values.shape[1] > 1 else name)
        ax.set_ylabel(name)
        if values.shape[1] <= 10:
            ax.legend(fontsize=7, ncol=min(5, values.shape[1]))
    for ax in axes:
        mark_events(ax, events_of(f), args.log_time)
    shade_stages(axes, f)
    axes[0].set_title(f"{os.path.basename(text(f.attrs.get('model_file', args.file)))}  (flow, d = {f.attrs['d']})",
                      fontsize=9)
    return fig


def plot_sgd(f, args):
    seeds = sorted(k for k in f.keys() if k.startswith("seed_"))
    first = f[seeds[0]]["trajectory"]
    names = cosine_names(first)
    fig, axes = time_axes(args.log_time, 1 + len(names))
    for row, name in enumerate(["risk"] + names):
        ax = axes[row]
        curves = []
        for s in seeds:
            traj = f[s]["trajectory"]
            t = traj["time"][:]
            values = series(traj, name)
            v = values.max(axis=1) if name != "risk" else values[:, 0]
            tt, vv = positive(t, v, log_time=args.log_time)
            (ax.semilogy if name == "risk" else ax.plot)(tt, floor_risk(vv) if name == "risk" else vv,
                                                         color="C0", lw=0.5, alpha=0.4)
            curves.append((t, v))
        length = min(len(c[0]) for c in curves)
        median = np.median(np.array([c[1][:length] for c in curves]), axis=0)
        tt, mm = positive(curves[0][0][:length], median, log_time=args.log_time)
        (ax.semilogy if name == "risk" else ax.plot)(tt, floor_risk(mm) if name == "risk" else mm,
                                                     color="C3", lw=1.8, label="median over seeds")
        ax.set_ylabel(name if name == "risk" else f"max {name}")
    axes[0].legend(fontsize=7)
    medians = []
    if "event_statistics" in f:
        for name, ds in f["event_statistics"].items():
            if np.isfinite(ds[()]):
                medians.append((float(ds[()]), name))
    for ax in axes:
        mark_events(ax, sorted(medians), args.log_time)
    axes[0].set_title(f"{os.path.basename(text(f.attrs.get('model_file', args.file)))}  (SGD, d = {f.attrs['d']}, "
                      f"η = {f.attrs['learning_rate']:.3g}, {len(seeds)} seeds)", fontsize=9)
    return fig


def plot_compare(f, args):
    table = f["table"]
    names = text(f.attrs["event_names"]).split("\n") if text(f.attrs["event_names"]) else []
    d, event = table["d"][:], table["event"][:].astype(int)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    ax = axes[0]
    missing = []  # events that happened at no d, in neither run: nothing to draw
    for e, name in enumerate(names):
        rows = event == e
        ode, med = table["ode_median"][rows], table["sgd_median"][rows]
        if not (np.any(np.isfinite(ode)) or np.any(np.isfinite(med))):
            missing.append(name)
            continue
        q25, q75 = table["sgd_q25"][rows], table["sgd_q75"][rows]
        scaling = f["scaling"][name].attrs if name in f["scaling"] else {}
        ax.loglog(d[rows], ode, "o-", color=f"C{e}", label=f"{name}: ODE (slope {scaling.get('ode_time', np.nan):.2f})")
        ax.errorbar(d[rows], med, yerr=[np.maximum(med - q25, 0), np.maximum(q75 - med, 0)], fmt="s--",
                    color=f"C{e}", alpha=0.7, capsize=3,
                    label=f"{name}: SGD median, IQR (slope {scaling.get('sgd_time', np.nan):.2f})")
    if missing:
        ax.text(0.02, 0.97, f"did not happen by t_end at any d: {', '.join(missing)}", transform=ax.transAxes,
                ha="left", va="top", fontsize=7, color="0.3")
    if len(missing) == len(names):
        ax.set_xscale("log")
        ax.set_xlim(d.min() / 1.2, d.max() * 1.2)
    ax.set_xlabel("d")
    ax.set_ylabel("event time t")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")
    ax = axes[1]
    dims = np.unique(d)
    distance = table["overlap_distance"][:]
    ax.loglog(dims, distance, "o-", color="k",
              label=f"median over seeds of sup |SGD − ODE| (slope {f.attrs.get('distance_exponent', np.nan):.2f})")
    ax.loglog(dims, distance[0] * np.sqrt(dims[0] / dims), ":", color="0.5", label="∝ d^(-1/2)")
    ax.set_xlabel("d")
    ax.set_ylabel("overlap distance")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")
    fig.suptitle(f"{os.path.basename(text(f.attrs.get('model_file', args.file)))}: ODE vs SGD, "
                 f"{f.attrs['seeds']} seeds per d", fontsize=9)
    return fig


def plot_verify(f, args):
    """The model's run as a flow plot, with the checks' verdicts in a box."""
    fig = plot_flow(f, args)
    lines = []
    for name, ds in f["checks"].items():
        lines.append(f"{text(ds.attrs['status'])}  {name}: {text(ds.attrs['measured'])[:70]}")
    fig.axes[0].text(0.01, 0.03, "\n".join(lines), transform=fig.axes[0].transAxes, fontsize=6, va="bottom",
                     family="monospace", bbox=dict(facecolor="white", alpha=0.85, edgecolor="0.7"))
    fig.axes[0].set_title(fig.axes[0].get_title().replace("(flow,", "(verify,"), fontsize=9)
    return fig


def grid_column(table, key):
    """The values of a grid key per row, as numbers when they are numbers, else as the texts."""
    data = table[key][:]
    if "values" in table[key].attrs:
        names = text(table[key].attrs["values"]).split("\n")
        return np.array([names[int(i)] for i in data], dtype=object), False
    return data, True


def plot_sweep(f, args):
    table = f["table"]
    keys = [line.split("=", 1)[0] for line in text(f.attrs["grid"]).split("\n")]
    x, numeric = grid_column(table, keys[0])
    others = [[f"{v:g}" if numeric_other else v for v in values]
              for values, numeric_other in (grid_column(table, k) for k in keys[1:])]
    groups = {}
    for row in range(len(x)):
        label = ", ".join(f"{k}={others[j][row]}" for j, k in enumerate(keys[1:]))
        groups.setdefault(label, []).append(row)
    risks = [(c, style) for c, style in (("sgd_final_test_risk", "o-"), ("sgd_final_risk", "o-"),
                                         ("flow_final_risk", "s--")) if c in table]
    if "sgd_final_test_risk" in table:
        risks = [r for r in risks if r[0] != "sgd_final_risk"]
    # Event columns with a time somewhere (nan: the event did not happen at that point).
    events = [c for c in table if (c.startswith("flow_event_") or c.startswith("sgd_event_"))
              and np.any(np.isfinite(table[c][:]) & (table[c][:] > 0))]
    if len(events) * len(groups) > 12:  # too many lines to read: the risk panel alone
        events = []
    fig, axes = plt.subplots(1, 2 if events else 1, figsize=(10 if events else 6, 4), squeeze=False)
    axes = axes[0]
    positions = x.astype(float) if numeric else np.arange(len(x))
    ticks = {}
    log_x = numeric and np.all(positions > 0) and positions.max() >= 10 * positions.min()

    def draw(ax, column, style, color, rows, label, mark_min):
        y = floor_risk(table[column][:]) if mark_min else table[column][:]
        rows = np.array(rows)
        order = rows[np.argsort(positions[rows])]
        finite = order[np.isfinite(y[order])]
        ax.plot(positions[order], y[order], style, color=f"C{color}", label=label)
        if mark_min and finite.size:
            best = finite[np.argmin(y[finite])]
            ax.plot(positions[best], y[best], "*", color=f"C{color}", markersize=14, markeredgecolor="k")
        for r in order:
            ticks[positions[r]] = x[r]

    ax = axes[0]
    for color, (group_label, rows) in enumerate(groups.items()):
        for column, style in risks:
            name = column.replace("_final", "").replace("_", " ")
            draw(ax, column, style, color, rows, f"{name}{', ' + group_label if group_label else ''}", True)
    if any(np.any(np.isfinite(table[c][:])) for c, _ in risks):  # else every point failed
        ax.set_yscale("log")
    ax.set_ylabel("final risk (★: minimum of the line)")
    if events:
        ax = axes[1]
        for color, (group_label, rows) in enumerate(groups.items()):
            for e, column in enumerate(events):
                style = "osD^v<>"[e % 7] + ("--" if column.startswith("flow") else "-")
                draw(ax, column, style, color, rows, f"{column}{', ' + group_label if group_label else ''}", False)
        ax.set_yscale("log")
        ax.set_ylabel("event time t")
    for ax in axes:
        ax.set_xlabel(keys[0])
        if log_x:
            ax.set_xscale("log")
        elif not numeric:
            ax.set_xticks(sorted(ticks), [str(ticks[p]) for p in sorted(ticks)])
        elif len(ticks) <= 12:  # a few grid values (k = 1..E): a tick at each, as written
            ax.set_xticks(sorted(ticks), [f"{p:g}" for p in sorted(ticks)])
        ax.grid(alpha=0.3, which="both")
        if ax.get_legend_handles_labels()[0]:  # nothing drawn when every point failed
            ax.legend(fontsize=6)
    # The keys set at every point (--set), but the output grid, which changes no result.
    fixed = [o for o in text(f.attrs.get("overrides", "")).split("\n") if o and not o.startswith("output.")]
    seeds = int(f.attrs.get("seeds", 1))
    run = text(f.attrs["run"]) + (f", median of {seeds} seeds" if seeds > 1 and text(f.attrs["run"]) != "flow" else "")
    fig.suptitle(f"{os.path.basename(text(f.attrs.get('model_file', args.file)))}: sweep over "
                 f"{', '.join(keys)} ({run})" + (f"\n{', '.join(fixed)}" if fixed else ""), fontsize=9)
    return fig


def main():
    parser = argparse.ArgumentParser(description="Plot a moeflow result file to a PNG.")
    parser.add_argument("file")
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("--log-time", action="store_true")
    args = parser.parse_args()
    try:
        f = h5py.File(args.file, "r")
    except OSError as e:
        print(f"moeflow plot: error: cannot read '{args.file}' as HDF5 ({e})", file=sys.stderr)
        return 2
    kind = text(f.attrs.get("kind", ""))
    plotters = {"flow": plot_flow, "sgd": plot_sgd, "compare": plot_compare, "verify": plot_verify, "sweep": plot_sweep}
    if kind not in plotters:
        print(f"moeflow plot: error: '{args.file}' has kind '{kind}'; plot knows flow, sgd, compare, verify, sweep", file=sys.stderr)
        return 2
    fig = plotters[kind](f, args)
    fig.tight_layout()
    folder = os.path.dirname(os.path.abspath(args.output))
    fd, tmp = tempfile.mkstemp(prefix=".moeflow-plot-", suffix=".png", dir=folder)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp makes it private; a picture is for sharing
        os.replace(tmp, args.output)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
