"""The progress bar of ``queuey post``: bytes of input read and messages stored, on stderr."""

from __future__ import annotations

from typing import Any

from rich.progress import (BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

from queuey.cli.output import console


class PostProgress:
    """A context manager; :meth:`advance` after each batch.  Shows nothing when ``shown`` is false."""

    def __init__(self, total_bytes: int | None, shown: bool) -> None:
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._messages = 0
        if shown:
            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                      TextColumn("{task.fields[messages]} messages"), TimeElapsedColumn(),
                                      TimeRemainingColumn(), console=console(stderr=True), transient=False)
            self._task = self._progress.add_task("posting", total=total_bytes, messages=0)

    def __enter__(self) -> "PostProgress":
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.stop()

    def finish(self) -> None:
        """All of the input was read (empty lines after the last message too)."""
        if self._progress is not None and self._task is not None:
            task = self._progress.tasks[0]
            if task.total is not None:
                self._progress.update(self._task, completed=task.total)

    def advance(self, consumed: int, messages: int) -> None:
        self._messages += messages
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, advance=consumed, messages=self._messages)
