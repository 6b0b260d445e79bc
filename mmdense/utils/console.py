"""A console a person reads: one line per step, with a progress bar while it runs, and the
output of the programs it runs kept in log files instead of on the screen.

On a terminal the step's line is redrawn in place (``\\r``) as it progresses; elsewhere (a pipe,
a file, CI) only the finished line is written, so a log of the run holds one line per step.
"""
import os
import re
import subprocess
import sys
import time
from typing import Callable, List, Optional, TextIO

# MMEngine's training log lines: "Epoch(train)  [3][12/19]" (epoch-based loops) or
# "Iter(train) [ 40/100]" (iteration-based); both end their record with the total.
_EPOCH_PROGRESS = re.compile(r'Epoch\(train\)\s*\[(\d+)\]\s*\[\s*(\d+)/(\d+)\]')
_ITER_PROGRESS = re.compile(r'Iter\(train\)\s*\[\s*(\d+)/(\d+)\]')


def training_progress(line: str, max_epochs: Optional[int] = None) -> Optional[tuple]:
    """``(iterations done, iterations in all)`` of an MMEngine training log line, or None.

    An epoch-based line ``[e][i/n]`` is ``((e - 1)·n + i, max_epochs·n)``; with ``max_epochs``
    unknown the total is that of the epoch, ``(i, n)``. An iteration-based line ``[i/N]`` is
    ``(i, N)``.
    """
    match = _EPOCH_PROGRESS.search(line)
    if match:
        epoch, done, per_epoch = (int(g) for g in match.groups())
        if max_epochs is None:
            return done, per_epoch
        return (epoch - 1) * per_epoch + done, max_epochs * per_epoch
    match = _ITER_PROGRESS.search(line)
    if match:
        return int(match.group(1)), int(match.group(2))
    return None


class StepLine:
    """The line of one step: ``[prefix] title  [#####-----]  12/108  34 s`` while it runs,
    ``[prefix] title: <summary>`` once :meth:`finish` is called."""

    def __init__(self, title: str, prefix: str = 'demo', stream: Optional[TextIO] = None,
                 width: int = 24, min_interval: float = 0.2) -> None:
        self.title, self.prefix, self.width = title, prefix, width
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty()
        self.start = time.time()
        self.min_interval, self._last_draw = min_interval, 0.0
        self.done, self.total = 0, None
        self._drawn = 0

    def update(self, done: int, total: Optional[int] = None) -> None:
        """``done`` of ``total`` units finished (the total may be learnt late, or change)."""
        self.done, self.total = done, total if total is not None else self.total
        now = time.time()
        if self.live and (now - self._last_draw >= self.min_interval or done == self.total):
            self._last_draw = now
            self._draw(self._bar())

    def _bar(self) -> str:
        elapsed = f'{time.time() - self.start:.0f} s'
        if not self.total:
            return f'[{self.prefix}] {self.title}  {elapsed}'
        filled = round(self.width * min(self.done, self.total) / self.total)
        return (f'[{self.prefix}] {self.title}  [{"#" * filled}{"-" * (self.width - filled)}] '
                f'{self.done}/{self.total}  {elapsed}')

    def _draw(self, text: str) -> None:
        self.stream.write('\r' + text + ' ' * max(0, self._drawn - len(text)))
        self.stream.flush()
        self._drawn = len(text)

    def finish(self, summary: str) -> None:
        """Replace the bar with the step's final line."""
        text = f'[{self.prefix}] {self.title}: {summary}'
        if self.live:
            self._draw(text)
            self.stream.write('\n')
        else:
            self.stream.write(text + '\n')
        self.stream.flush()


def run_logged(cmd: List[str], log_path: str, on_line: Optional[Callable[[str], None]] = None,
               poll_s: float = 0.25, tail_lines: int = 40, **popen_kwargs) -> None:
    """Run ``cmd`` with its stdout and stderr written to ``log_path`` (created with its folder);
    ``on_line`` is called with each line the program writes, as it writes it.

    Raises:
        RuntimeError: the program exited non-zero; the message holds the command, the log's
            path and its last ``tail_lines`` lines.
    """
    os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
    with open(log_path, 'w') as log, open(log_path) as reader:
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, **popen_kwargs)
        pending = ''
        while True:
            finished = process.poll() is not None
            pending += reader.read()
            *lines, pending = pending.split('\n')
            for line in lines:
                if on_line is not None:
                    on_line(line)
            if finished:
                break
            time.sleep(poll_s)
    if process.returncode != 0:
        with open(log_path) as f:
            tail = ''.join(f.readlines()[-tail_lines:])
        raise RuntimeError(f'{" ".join(cmd)} exited with {process.returncode}; its log is '
                           f'{log_path}, ending:\n{tail}')
