"""The line `%%track` ends with: run name, id, status, its models' state and a link to the run in
the MLflow UI. A compact widget where widgets render (the model state updates when the background
writer has logged it), the same line as HTML or text elsewhere. All user strings are escaped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nb_mlops.present.text import esc, plain

__all__ = ["RunSummary"]

_COLOURS = {"FINISHED": "#1a7f37", "FAILED": "#cf222e", "KILLED": "#9a6700"}


@dataclass
class RunSummary:
    """One tracked run, summarised.

    Attributes:
        name: the run name.
        run_id: the MLflow run id.
        status: FINISHED, FAILED or KILLED.
        url: the run's page in the MLflow UI ("" when unknown).
        models: model name → pending | logged | not logged: <why>.
    """

    name: str
    run_id: str
    status: str
    url: str = ""
    models: dict[str, str] = field(default_factory=dict)
    _widget: Any = field(default=None, repr=False)

    def model_text(self) -> str:
        if not self.models:
            return "model: none"
        if len(self.models) == 1:
            ((name, state),) = self.models.items()
            return f"model: {state}" if name == "model" else f"model {name}: {state}"
        return "models: " + ", ".join(f"{k} {v}" for k, v in self.models.items())

    def text(self) -> str:
        """The summary as one line of plain text."""
        parts = [f"run {plain(self.name)} ({self.run_id[:12]})", self.status, self.model_text()]
        if self.url:
            parts.append(self.url)
        return " · ".join(parts)

    def html(self) -> str:
        """The summary as one line of HTML."""
        colour = _COLOURS.get(self.status, "#57606a")
        name = esc(self.name)
        if self.url:
            name = f"<a href='{esc(self.url)}' target='_blank' rel='noopener noreferrer'>{name}</a>"
        return (
            "<div class='nb-mlops-run' style='font-size:12px;margin:2px 0'>"
            f"run {name} <code title='{esc(self.run_id)}'>{esc(self.run_id[:12])}</code> · "
            f"<span style='color:{colour}'>{esc(self.status)}</span> · "
            f"{esc(self.model_text())}</div>"
        )

    def update(self, models: dict[str, str]) -> None:
        """New model states (called from the writer thread): the widget shows them at once."""
        self.models = dict(models)
        if self._widget is not None:
            self._widget.value = self.html()

    def widget(self) -> Any:
        """An ipywidgets HTML showing the line (kept up to date by `update`)."""
        import ipywidgets

        if self._widget is None:
            self._widget = ipywidgets.HTML(self.html())
        return self._widget

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        bundle: dict[str, Any] = {}
        if self._widget is not None:
            bundle.update(self._widget._repr_mimebundle_() or {})
        bundle["text/plain"] = self.text()
        bundle["text/html"] = self.html()
        return bundle

    def __repr__(self) -> str:
        return self.text()
