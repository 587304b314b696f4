"""The precision toggle: pick fp32 / bf16 / fp8 (and the FP8 backend), train a real small transformer for N
steps, and see its step time, memory and loss curve beside the previous runs.

* Live (Jupyter kernel): :meth:`PrecisionToggle.widget` -- one toggle button per choice; choices this machine
  cannot run are **disabled** and their tooltip (and the list under the buttons) says why ("CPU: emulation
  only", "no FP8 tensor cores on this GPU", "transformer_engine.pytorch cannot be imported ..."). "Train"
  runs :func:`wmkit.precision_bench.train_run` and redraws the curves and the table.
* Static (the built book, no kernel): :meth:`PrecisionToggle.show` draws the same figure and table from runs
  made while the book was built, plus the same list of choices with the reasons, as plain HTML.

The model is :class:`wmkit.precision_bench.BenchTransformer` (``wmkit.nn.TransformerBlock`` x depth) at the
profile's ``P.fp8.toggle_model`` size, trained for ``P.fp8.toggle_steps`` steps with the same seed and batches
in every precision, so the curves differ only by the arithmetic.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import numpy as np

from wmkit.precision import fp8_status
from wmkit.precision_bench import train_run
from wmkit.profiles import profile
from wmkit.utils import pick_device


@dataclass(frozen=True)
class Choice:
    """One button of the toggle."""

    precision: str
    backend: str
    enabled: bool
    reason: str
    """why it is disabled, or what it means when enabled"""

    @property
    def label(self) -> str:
        return self.precision if self.precision != "fp8" else f"fp8 · {self.backend}"


def precision_choices(device=None) -> list[Choice]:
    """Every (precision, backend) pair, enabled or not, with the reason (from :func:`wmkit.precision.fp8_status`)."""
    st = fp8_status(device)
    on_cuda = st["device"].startswith("cuda")
    cores = on_cuda and st["te_recipe"] is not None
    if not on_cuda:
        hw = "CPU: emulation only"
    elif not cores:
        cc = st["capability"]
        hw = f"no FP8 tensor cores on this GPU (compute capability {cc[0]}.{cc[1]} < 8.9)"
    else:
        hw = ""
    out = [Choice("fp32", "torch", True, "full precision"),
           Choice("bf16", "torch", st["bf16"][0], st["bf16"][1] or "torch.autocast(bfloat16)")]
    for b, name in (("te", "Transformer Engine"), ("torchao", "torchao float8")):
        ok, why = st["backends"][b]
        if hw:
            out.append(Choice("fp8", b, False, hw))
        elif not ok:
            out.append(Choice("fp8", b, False, why))
        else:
            recipe = st["te_recipe"] if b == "te" else "tensorwise"
            out.append(Choice("fp8", b, True, f"{name}, recipe {recipe}"))
    out.append(Choice("fp8", "emulation", True, "exact FP8 rounding, fp32 matmuls: the numbers of FP8, no speed-up"))
    return out


class PrecisionToggle:
    """Train the toggle model in several precisions and compare the runs (see the module docstring)."""

    def __init__(self, steps: int | None = None, model: dict | None = None, device: str | None = None,
                 seed: int = 0):
        P = profile()
        self.steps = int(steps if steps is not None else P.fp8.toggle_steps)
        if self.steps < 1:
            raise ValueError(f"steps: expected >= 1, got {self.steps}")
        self.model = dict(model if model is not None else P.fp8.toggle_model)
        self.device = str(pick_device(device))
        self.seed = seed
        self.runs: list[dict] = []
        self._out = None

    def choices(self) -> list[Choice]:
        return precision_choices(self.device)

    def train(self, precision: str, backend: str = "emulation", progress: bool = False) -> dict:
        """Train one run (``backend`` matters for fp8 only) and keep it; refuses a disabled choice."""
        label = precision if precision != "fp8" else f"fp8 · {backend}"
        match = [c for c in self.choices() if c.label == label]
        if not match:
            raise ValueError(f"precision/backend: {label!r} is not one of {[c.label for c in self.choices()]}")
        if not match[0].enabled:
            raise ValueError(f"{label} is not available here: {match[0].reason}")
        r = train_run(precision, steps=self.steps, device=self.device, backend=backend if precision == "fp8"
                      else "auto", seed=self.seed, progress=progress, **self.model)
        r["label"] = label
        self.runs.append(r)
        return r

    # -- views -----------------------------------------------------------------------------------------
    def figure(self):
        """Loss curves of every run (left) and step time per run (right)."""
        import matplotlib.pyplot as plt

        fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [2, 1]})
        for i, r in enumerate(self.runs):
            loss = np.asarray(r["losses"])
            k = max(1, len(loss) // 30)
            smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
            ax.plot(np.arange(len(smooth)) + k - 1, smooth, label=f"#{i + 1} {r['label']}")
        ax.axhline(np.log(self.model.get("vocab", 16)), color="gray", ls=":", lw=1, label="chance")
        ax.set_xlabel("training step")
        ax.set_ylabel("cross-entropy (moving average)")
        ax.set_title(f"loss, {self.steps} steps, same seed and batches")
        ax.legend(fontsize=8)
        names = [f"#{i + 1} {r['label']}" for i, r in enumerate(self.runs)]
        bx.barh(names, [r["step_ms"] for r in self.runs], color="C0")
        bx.invert_yaxis()
        bx.set_xlabel("median ms per training step")
        bx.set_title(f"step time on {self.device}")
        fig.tight_layout()
        return fig

    def table_html(self) -> str:
        """One row per run: precision, backend, step time (and ratio to the latest bf16 run), memory, loss."""
        bf16 = [r for r in self.runs if r["precision"] == "bf16"]
        ref = bf16[-1]["step_ms"] if bf16 else None
        head = ("<tr><th>#</th><th>choice</th><th>ms/step</th><th>vs bf16</th><th>peak memory MB</th>"
                "<th>saved activations MB</th><th>final loss (last 10)</th></tr>")
        rows = []
        for i, r in enumerate(self.runs):
            ratio = f"{r['step_ms'] / ref:.2f}x" if ref else "–"
            peak = f"{r['peak_memory_mb']:.0f}" if r["peak_memory_mb"] is not None else "n/a on CPU"
            final = float(np.mean(r["losses"][-10:]))
            rows.append(f"<tr><td>{i + 1}</td><td>{html.escape(r['label'])}</td><td>{r['step_ms']:.1f}</td>"
                        f"<td>{ratio}</td><td>{peak}</td><td>{r['saved_activation_mb']:.2f}</td>"
                        f"<td>{final:.3f}</td></tr>")
        m = self.model
        cap = (f"model: {m['depth']} x TransformerBlock(dim={m['dim']}, heads={m['heads']}), "
               f"sequence {m['seq_len']}, batch {m['batch']}; device {html.escape(self.device)}")
        return f"<table><caption>{cap}</caption>{head}{''.join(rows)}</table>"

    def choices_html(self) -> str:
        """The toggle's buttons as static HTML: disabled ones greyed out, each with its reason."""
        items = []
        for c in self.choices():
            style = "" if c.enabled else "color:#999;text-decoration:line-through"
            items.append(f"<li><b style='{style}'>{html.escape(c.label)}</b>: "
                         f"{'available' if c.enabled else 'disabled'} ({html.escape(c.reason)})</li>")
        return "<ul>" + "".join(items) + "</ul>"

    def show(self) -> None:
        """Static view (works in the built book): choices, figure and table of the runs so far."""
        import matplotlib.pyplot as plt
        from IPython.display import HTML, display

        display(HTML(self.choices_html()))
        if self.runs:
            fig = self.figure()
            display(fig)
            plt.close(fig)
            display(HTML(self.table_html()))

    def widget(self):
        """Live ipywidgets view: toggle buttons (disabled with the reason), steps, Train, and the results."""
        import ipywidgets as W
        import matplotlib.pyplot as plt
        from IPython.display import HTML, display

        choices = self.choices()
        buttons = [W.ToggleButton(description=c.label, disabled=not c.enabled, tooltip=c.reason,
                                  value=False) for c in choices]
        first = next(i for i, c in enumerate(choices) if c.enabled)
        buttons[first].value = True
        steps = W.BoundedIntText(value=self.steps, min=1, max=100_000, description="steps")
        go = W.Button(description="Train", button_style="primary")
        reasons = W.HTML(self.choices_html())
        out = W.Output()

        def pick(change, me):
            if change["new"]:
                for b in buttons:
                    if b is not me and b.value:
                        b.value = False

        for b in buttons:
            b.observe(lambda ch, me=b: pick(ch, me), names="value")

        def redraw():
            out.clear_output(wait=True)
            with out:
                if self.runs:
                    fig = self.figure()
                    display(fig)
                    plt.close(fig)
                    display(HTML(self.table_html()))

        def train(_):
            sel = [c for c, b in zip(choices, buttons) if b.value]
            if not sel:
                return
            self.steps = int(steps.value)
            go.disabled, go.description = True, "training..."
            try:
                with out:
                    self.train(sel[0].precision, sel[0].backend, progress=True)
            finally:
                go.disabled, go.description = False, "Train"
            redraw()

        go.on_click(train)
        redraw()
        return W.VBox([W.HBox(buttons), W.HBox([steps, go]), reasons, out])
