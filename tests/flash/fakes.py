"""A console and a progress display that flash tests and the flash benchmark drive.

:class:`FakeConsole` answers the confirmation question as told and keeps every line and
question; its :class:`Recorder` progress remembers the stages and can act when one starts
(damaging the card when verification begins, say).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from k3py.image.flash.progress import Progress


@dataclass
class Recorder:
    """Progress that remembers the stages and their totals."""

    stages: list[tuple[str, int]] = field(default_factory=list)
    on_start: Callable[[str], None] | None = None

    def start(self, stage: str, total: int) -> None:
        self.stages.append((stage, total))
        if self.on_start is not None:
            self.on_start(stage)

    def advance(self, count: int) -> None:
        pass

    def finish(self, ok: bool = True) -> None:
        pass


@dataclass
class FakeConsole:
    is_interactive: bool = False
    answer: bool = False
    recorder: Recorder = field(default_factory=Recorder)
    lines: list[str] = field(default_factory=list)
    questions: list[str] = field(default_factory=list)

    @property
    def interactive(self) -> bool:
        return self.is_interactive

    def say(self, line: str) -> None:
        self.lines.append(line)

    def confirm(self, question: str) -> bool:
        self.questions.append(question)
        return self.answer

    def progress(self) -> Progress:
        return self.recorder
