"""Matplotlib figures of the analyses. Each returns a ``matplotlib.figure.Figure`` built without pyplot (no global
state, any backend): save it with ``fig.savefig(path)`` or show it in Jupyter as the cell's value."""

from __future__ import annotations

import math

import torch


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def discovery_figure(d, top: int = 12, threshold: float = 0.0, include_constant: bool = True):
    """Box plot per term of the re-centred coefficients over the reference points; the local value as a red diamond."""
    order = [m for m in d.order_terms("mean") if include_constant or m != 0]
    order = [m for m in order if max(abs(float(d.mean[m])), abs(float(d.local[m]))) > threshold][:top]
    center = d.polynomial()
    alphas = d.basis.multi_indices()
    labels = [center.monomial_text(alphas[m]) for m in order]
    others = d.coefficients[1:] if d.coefficients.shape[0] > 1 else d.coefficients
    fig = _figure(max(4.0, 0.6 * len(order) + 2), 3.6)
    ax = fig.add_subplot()
    estimate = getattr(d, "chosen", getattr(d, "method", "taylor"))  # discover(method="auto") keeps its choice
    fitted = estimate != "taylor"
    if order and fitted:
        ax.errorbar(range(1, len(order) + 1), [float(d.mean[m]) for m in order],
                    yerr=[2 * float(d.std[m]) for m in order], fmt="o", capsize=4, label=f"{estimate} +- 2 s.e.")
    elif order:
        ax.boxplot([others[:, m].double().numpy() for m in order], showfliers=True)
    if order:
        ax.scatter(range(1, len(order) + 1), [float(d.local[m]) for m in order], marker="D", color="crimson",
                   zorder=3, label="at the centre")
        ax.set_xticks(range(1, len(order) + 1), labels, rotation=45, ha="right")
        ax.legend(loc="best")
    ax.axhline(0.0, color="0.6", lw=0.8)
    ax.set_ylabel("coefficient (around the centre)")
    ax.set_title(f"estimate: {estimate} (chosen by held-out error)" if fitted and getattr(d, "method", "") == "auto"
                 else f"least-squares fit on {d.points.shape[0]} samples" if fitted
                 else f"terms over {others.shape[0]} reference points")
    return fig


def heatmap_figure(images: torch.Tensor, maps: dict[str, torch.Tensor], image_shape=None, titles=None):
    """Grid: one row per image, the image then one diverging heat map per method (shared symmetric colour range)."""
    images = images.detach().double()
    b = images.shape[0]
    shape = tuple(image_shape) if image_shape is not None else _image_shape(images[0])
    fig = _figure(2.2 * (len(maps) + 1), 2.2 * b)
    axes = fig.subplots(b, len(maps) + 1, squeeze=False)
    for i in range(b):
        axes[i][0].imshow(images[i].reshape(shape).numpy(), cmap="gray")
        axes[i][0].set_title(titles[i] if titles else "input", fontsize=9)
        for j, (name, m) in enumerate(maps.items(), start=1):
            v = m[i].detach().double().reshape(shape)
            lim = float(v.abs().max()) or 1.0
            im = axes[i][j].imshow(v.numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim)
            axes[i][j].set_title(name, fontsize=9)
            fig.colorbar(im, ax=axes[i][j], shrink=0.75)
    for ax in fig.axes:
        if ax.get_label() != "<colorbar>":
            ax.set_xticks([])
            ax.set_yticks([])
    return fig


def _image_shape(row: torch.Tensor) -> tuple[int, int]:
    squeezed = [s for s in row.shape if s != 1]
    if len(squeezed) == 2:
        return tuple(squeezed)
    side = math.isqrt(row.numel())
    return (side, row.numel() // side) if side * side == row.numel() else (1, row.numel())


def deletion_figure(curves):
    """Deletion curves (mean over rows) with their areas in the legend: lower means a better ranking."""
    fig = _figure(5.0, 3.6)
    ax = fig.add_subplot()
    for c in curves:
        ax.plot(c.fractions.numpy(), c.values.mean(0).numpy(), label=f"{c.label or 'scores'} (AUC {c.auc:.3g})")
    ax.set_xlabel("fraction of elements removed (top-ranked first)")
    ax.set_ylabel("output")
    ax.set_title("deletion curves")
    ax.legend(loc="best", fontsize=8)
    return fig


def convergence_figure(conv, orders=None, kind: str | None = None):
    """Left: max error vs order (log) at several radii. Right: network vs truncations along a line (kind="line") or
    contour maps of the network and the truncations (kind="contour", two variables)."""
    p = conv.polynomial
    if kind is None:
        kind = "contour" if p.n == 2 and conv.direction is None else "line"
    if kind not in ("line", "contour"):
        raise ValueError(f"kind must be 'line' or 'contour', got {kind!r}")
    shown = _pick_orders(conv.orders, orders)
    ncols = 2 + (len(shown) if kind == "contour" else 0)
    fig = _figure(4.0 * ncols if kind == "contour" else 10.0, 3.8)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    ax = axes[0]
    picks = sorted({0, len(conv.radii) // 2, len(conv.radii) - 1})
    floor = 1e-17  # exact zeros (a truncation equal to the network) would stretch the log axis to 1e-308
    for j in picks:
        ax.semilogy(conv.orders, conv.max_error[:, j].clamp_min(floor).numpy(), marker="o",
                    label=f"r = {float(conv.radii[j]):.3g}")
    ax.set_xlabel("order k")
    ax.set_ylabel("max |P_k - f|")
    ax.set_title(f"truncation error (radius estimate ~ {conv.radius_estimate:.3g})", fontsize=9)
    ax.legend(fontsize=8)
    if kind == "line":
        _line_panel(axes[1], conv, shown)
    else:
        _contour_panels(axes[1:], conv, shown)
    return fig


def _pick_orders(available, orders):
    if orders is not None:
        return [k for k in orders if k in available]
    if len(available) <= 4:
        return list(available)
    idx = torch.linspace(1, len(available) - 1, 4).round().long().unique().tolist()
    return [available[i] for i in idx]


def _line_points(conv, s: torch.Tensor, direction: torch.Tensor):
    from hope_engine.analysis._points import as_row, model_scalar, rows_at

    p = conv.polynomial
    offsets = s[:, None] * direction[None]
    row = as_row(conv.model, p.center[None])
    values = p.center_values.double()[None] + offsets
    f = model_scalar(conv.model, rows_at(row, p.variables, values.to(row.dtype)), conv.output).double()
    return offsets, f


def _line_panel(ax, conv, shown):
    from hope_engine.analysis._points import truncation_values

    p = conv.polynomial
    d = conv.direction if conv.direction is not None else torch.eye(p.n, dtype=torch.float64)[0]
    r = float(conv.radii[-1])
    s = torch.linspace(-r, r, 201, dtype=torch.float64)
    offsets, f = _line_points(conv, s, d)
    trunc = truncation_values(p, offsets, shown)
    ax.plot(s.numpy(), f.numpy(), color="black", lw=2.0, label="network")
    span = float(f.max() - f.min()) or 1.0
    for k, v in zip(shown, trunc):
        ax.plot(s.numpy(), v.double().numpy(), ls="--", label=f"order {k}")
    ax.set_ylim(float(f.min()) - 0.5 * span, float(f.max()) + 0.5 * span)
    ax.set_xlabel("s  (x = x0 + s d)")
    ax.set_ylabel("output")
    ax.set_title("network vs truncations along a line", fontsize=9)
    ax.legend(fontsize=8)


def _contour_panels(axes, conv, shown):
    from hope_engine.analysis._points import as_row, model_scalar, rows_at, truncation_values

    p = conv.polynomial
    r = float(conv.radii[-1])
    g = torch.linspace(-r, r, 61, dtype=torch.float64)
    u, v = torch.meshgrid(g, g, indexing="xy")
    offsets = torch.stack([u.reshape(-1), v.reshape(-1)], dim=1)
    row = as_row(conv.model, p.center[None])
    values = p.center_values.double()[None] + offsets
    f = model_scalar(conv.model, rows_at(row, p.variables, values.to(row.dtype)), conv.output).double()
    levels = torch.linspace(float(f.min()), float(f.max()), 15).numpy()
    c0 = p.center_values.double()
    ext = (float(c0[0]) - r, float(c0[0]) + r, float(c0[1]) - r, float(c0[1]) + r)
    x_axis, y_axis = (g + c0[0]).numpy(), (g + c0[1]).numpy()
    axes[0].contourf(x_axis, y_axis, f.reshape(u.shape).numpy(), levels=levels, cmap="viridis", extend="both")
    axes[0].set_title("network", fontsize=9)
    for ax, k, vals in zip(axes[1:], shown, truncation_values(p, offsets, shown)):
        ax.contourf(x_axis, y_axis, vals.double().reshape(u.shape).numpy(), levels=levels, cmap="viridis",
                    extend="both")
        ax.set_title(f"order {k}", fontsize=9)
    for ax in axes:
        ax.set_xlim(ext[0], ext[1])
        ax.set_ylim(ext[2], ext[3])
        ax.set_xlabel(p.names[0])
        ax.set_ylabel(p.names[1])


def interaction_figure(imap, image_shape=None, pairs: int = 8):
    """Left: the image, the top-k groups outlined, the strongest pairs joined by lines (red +, blue -, width ~ |term|).
    Right: the k x k matrix of mixed terms d^2 g / dz_p dz_q (symmetric colour range)."""
    x = imap.x.detach().double()
    shape = tuple(image_shape) if image_shape is not None else _image_shape(x[0])
    fig = _figure(8.0, 3.8)
    ax_img, ax_mat = fig.subplots(1, 2)
    ax_img.imshow(x.reshape(shape).numpy(), cmap="gray")
    centres = {}
    for g in imap.top_groups.tolist():
        cells = imap.masks[g].reshape(-1, shape[0] * shape[1]).amax(0).reshape(shape).nonzero().double()
        centres[g] = (float(cells[:, 1].mean()), float(cells[:, 0].mean()))
        ax_img.plot(*centres[g], marker="s", ms=5, mfc="none", mec="gold")
    shown = imap.pairs[:pairs]
    biggest = max((abs(p.mixed) for p in shown), default=1.0) or 1.0
    for p in shown:
        (x0, y0), (x1, y1) = centres[p.groups[0]], centres[p.groups[1]]
        ax_img.plot([x0, x1], [y0, y1], color="crimson" if p.mixed > 0 else "royalblue",
                    lw=0.5 + 3.0 * abs(p.mixed) / biggest, alpha=0.85)
    ax_img.set_title(f"top {len(shown)} pairs among {len(imap.top_groups)} groups", fontsize=9)
    ax_img.set_xticks([])
    ax_img.set_yticks([])
    m = imap.matrix.double().numpy()
    lim = float(abs(m).max()) or 1.0
    im = ax_mat.imshow(m, cmap="RdBu_r", vmin=-lim, vmax=lim)
    ax_mat.set_xticks(range(len(imap.names)), imap.names, rotation=90, fontsize=7)
    ax_mat.set_yticks(range(len(imap.names)), imap.names, fontsize=7)
    ax_mat.set_title("mixed terms d2 g / dz_p dz_q", fontsize=9)
    fig.colorbar(im, ax=ax_mat, shrink=0.8)
    return fig
