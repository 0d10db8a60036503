"""Where the package's text goes: colour only where it renders, a progress bar that suits its
stream (a terminal, a notebook, a pipe or a log file).

- Colour: the seed's coloured messages keep their ANSI codes on a terminal and in a Jupyter
  kernel (whose frontends render them), and lose them in pipes and files, or when the
  ``NO_COLOR`` environment variable is set (https://no-color.org).
- Progress: a terminal gets tqdm's bar, redrawn in place; a notebook gets the same bar in one
  output that is updated in place (IPython's ``display_id``: no ipywidgets, nothing frozen at
  ``0/N`` in a saved notebook, no ``TqdmWarning``); a pipe or a log file gets whole lines (no
  carriage returns, no escape codes), one every :data:`LOG_INTERVAL_S` seconds at most.
"""

from __future__ import annotations

import os
import re
import sys

#: An ANSI escape sequence (CSI ... final byte), as the seed's messages use for colours.
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")

#: Seconds between two progress lines written to a pipe or a log file.
LOG_INTERVAL_S = 10.0

#: The progress line's width in a notebook (tqdm cannot measure a notebook's width).
NOTEBOOK_COLUMNS = 80


def strip_ansi(text: str) -> str:
    """``text`` without its ANSI escape sequences."""
    return _ANSI.sub("", text)


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (JupyterLab, Notebook, VS Code, Colab).

    Qt console and Spyder run a kernel too but draw a terminal-like console: not notebooks.
    """
    if "ipykernel" not in sys.modules or "IPython" not in sys.modules:
        return False  # never import IPython just to ask
    if any(name == "QT_API" or name.startswith("SPYDER") for name in os.environ):
        return False
    get_ipython = getattr(sys.modules["IPython"], "get_ipython", None)
    shell = get_ipython() if get_ipython is not None else None
    return any(cls.__name__ == "ZMQInteractiveShell" for cls in type(shell).__mro__)


def is_terminal(stream) -> bool:
    """Whether ``stream`` is a terminal (not a pipe, a file or a capture)."""
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty is not None and isatty())
    except ValueError:  # a closed stream
        return False


def wants_colour(stream) -> bool:
    """Whether ANSI colours written to ``stream`` will be rendered, not stored as escape codes:
    a terminal, or a notebook's output stream; never with ``NO_COLOR`` set."""
    if os.environ.get("NO_COLOR"):
        return False
    if is_terminal(stream):
        return True
    # ipykernel's OutStream says it is no tty, but notebook frontends render ANSI colours.
    return type(stream).__module__.startswith("ipykernel") and in_notebook()


def coloured(text: str, stream=None) -> str:
    """``text`` as it should be written to ``stream`` (default ``sys.stdout``): with its ANSI
    colours where they render, without them elsewhere."""
    return text if wants_colour(sys.stdout if stream is None else stream) else strip_ansi(text)


def progress_bar(total: int, desc: str = "gradient check"):
    """A tqdm bar over ``total`` parameters, written where it suits (see the module's docstring).

    Raises
    ------
    ImportError
        Without tqdm, naming the ``progress`` extra that brings it.
    """
    try:
        from tqdm.std import tqdm  # not tqdm.auto: it warns without ipywidgets in a notebook
    except ImportError as exc:
        raise ImportError(
            "progress=True needs tqdm: pip install 'gradcheck-fast[progress]' (or tqdm)"
        ) from exc
    settings = {"total": total, "unit": "param", "desc": desc, "leave": True}
    if in_notebook():
        return tqdm(file=_NotebookOutput(), ncols=NOTEBOOK_COLUMNS, **settings)
    stream = sys.stderr
    if is_terminal(stream):  # tqdm redraws its line in place
        return tqdm(file=stream, **settings)
    return tqdm(file=_Lines(stream), mininterval=LOG_INTERVAL_S,
                bar_format="{desc}: {percentage:3.0f}% {n_fmt}/{total_fmt} "
                           "[{elapsed}<{remaining}, {rate_fmt}]", **settings)


def _records(text: str) -> list[str]:
    """The lines tqdm means by ``text``: it redraws with ``'\\r' + line + padding``."""
    return [record.rstrip() for record in re.split(r"[\r\n]", text) if record.strip()]


class _Lines:
    """A file for tqdm that writes each state of the bar as a whole line: what a pipe or a
    log file can hold (tqdm's carriage returns would pile every state onto one line)."""

    encoding = "utf-8"

    def __init__(self, stream):
        self._stream = stream
        self._last = None

    def write(self, text: str) -> None:
        for record in _records(text):
            if record != self._last:  # tqdm's close redraws the last state
                self._stream.write(strip_ansi(record) + "\n")
                self._last = record

    def flush(self) -> None:
        self._stream.flush()


class _NotebookOutput:
    """A file for tqdm that shows the bar in one notebook output, replaced at each redraw.

    A saved notebook keeps the last state (``N/N``), which every viewer shows as text.
    """

    encoding = "utf-8"

    def __init__(self):
        self._handle = None

    def write(self, text: str) -> None:
        records = _records(text)
        if not records:
            return
        from IPython.display import display  # a kernel has IPython (see in_notebook)

        bundle = {"text/plain": records[-1]}
        if self._handle is None:
            self._handle = display(bundle, raw=True, display_id=True)
        else:
            self._handle.update(bundle, raw=True)

    def flush(self) -> None:
        pass
