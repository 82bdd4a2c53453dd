"""The tuning progress bar: drawn on a terminal, silent otherwise."""

import io

from tvm_onednn.interface.progress import TerminalProgress
from tvm_onednn.tuning.progress import TaskStats, TuneProgress


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def _progress(trials):
    task = TaskStats("softmax", 1, trials=trials, best_seconds=42.5e-6)
    return TuneProgress(trials, 16, task, [task])


def test_bar_on_a_terminal():
    stream = _Terminal()
    bar = TerminalProgress(stream, width=8)
    bar(_progress(8))
    bar(_progress(16))
    bar.close()
    text = stream.getvalue()
    assert "\r" in text and text.endswith("\n")
    assert "[####----] 8/16 trials" in text and "[########] 16/16 trials" in text
    assert "softmax: best 42.5 us" in text


def test_silent_when_not_a_terminal():
    stream = io.StringIO()
    bar = TerminalProgress(stream)
    bar(_progress(8))
    bar.close()
    assert stream.getvalue() == ""
