"""What a run shows while it trains: a progress bar on a terminal, plain lines in a log file; and the
request to stop that SIGINT/SIGTERM make.

When the stream is not a terminal (a cluster job, ``run.py > log``) a bar that redraws itself with carriage
returns would pile hundreds of frames into one line, so ``Progress`` prints one plain line every
``interval`` seconds instead, and a last one when it closes.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from typing import Callable, Mapping, TextIO

from tqdm.auto import tqdm

PLAIN_INTERVAL_S = 30.0


class Progress:
    """Environment steps done out of ``total``, with a few figures (steps/s, return) beside them."""

    def __init__(
        self,
        total: int,
        initial: int = 0,
        stream: TextIO | None = None,
        interval: float = PLAIN_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        enabled: bool = True,
    ) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.total, self.done, self.interval, self.clock = total, initial, interval, clock
        self.enabled = enabled
        self.figures: dict[str, str] = {"status": "compiling"}
        self.on_terminal = enabled and bool(getattr(self.stream, "isatty", lambda: False)())
        self._bar = None
        if self.on_terminal:
            self._bar = tqdm(total=total, initial=initial, unit="step", unit_scale=True, file=self.stream,
                             desc="env steps (all seeds)", dynamic_ncols=True)
            self._bar.set_postfix_str("compiling")
        self._last_line = clock()

    def update(self, steps: int, figures: Mapping[str, str]) -> None:
        self.done += steps
        self.figures = dict(figures)
        if self._bar is not None:
            self._bar.set_postfix(self.figures)
            self._bar.update(steps)
        elif self.enabled and self.clock() - self._last_line >= self.interval:
            self._print_line()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.enabled:
            self._print_line()

    def _print_line(self) -> None:
        share = 100.0 * self.done / self.total if self.total else 100.0
        figures = "".join(f", {name} {value}" for name, value in self.figures.items())
        print(f"env steps {self.done:,}/{self.total:,} ({share:.0f}%){figures}", file=self.stream, flush=True)
        self._last_line = self.clock()


class StopRequest:
    """Turns the first SIGINT/SIGTERM into a request to stop after the running chunk (whose rows and
    checkpoint are then written); a second one abandons the chunk at once (KeyboardInterrupt)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():  # signal.signal works only there
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        print(f"\n{signal.Signals(signum).name}: stopping after the running chunk and its checkpoint "
              "(send it again to stop at once)", file=sys.stderr, flush=True)
