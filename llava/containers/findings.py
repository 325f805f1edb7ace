"""What `llava-kit doctor` reports: one finding per check, each with the fix when something is wrong."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Literal

Status = Literal["ok", "info", "warn", "block"]
# where doctor runs, which decides how a fix is worded (compose services or llava-kit itself)
Runtime = Literal["docker-host", "container", "bare"]

# how each status reads in the terminal
_MARKS = {"ok": "[green]ok[/]", "info": "[cyan]info[/]", "warn": "[yellow]warn[/]", "block": "[red]BLOCK[/]"}


@dataclass(frozen=True)
class Finding:
    """One check's verdict. `block` means the stage would fail; `warn` means it may run badly."""

    check: str
    status: Status
    message: str
    fix: str | None = None

    @property
    def blocking(self) -> bool:
        return self.status == "block"


@dataclass
class DoctorReport:
    stage: str
    findings: list[Finding] = field(default_factory=list)
    runtime: Runtime = "bare"

    @property
    def blocking(self) -> bool:
        return any(f.blocking for f in self.findings)

    def to_json(self) -> str:
        payload = {"stage": self.stage, "runtime": self.runtime, "blocking": self.blocking,
                   "findings": [asdict(f) for f in self.findings]}
        return json.dumps(payload, indent=2)

    def print(self) -> None:
        """A table for people; `--json` gives the same content to scripts."""
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"llava-kit doctor: {self.stage} ({self.runtime})", show_lines=True)
        for column in ("check", "status", "finding", "fix"):
            table.add_column(column, overflow="fold")
        for f in self.findings:
            table.add_row(f.check, _MARKS[f.status], f.message, f.fix or "")
        console = Console()
        console.print(table)
        verdict = "[red]blocked: fix the BLOCK rows first[/]" if self.blocking else "[green]ready[/]"
        console.print(verdict)
