"""A small reader of the top-level Dockerfile, so tests can check what the image declares."""

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

DOCKERFILE = Path(__file__).resolve().parents[1] / "Dockerfile"


@dataclass
class Stage:
    """One ``FROM`` block: its base, its name and its instructions as (KEYWORD, arguments)."""

    base: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def arguments(self, keyword: str) -> list[str]:
        return [args for key, args in self.instructions if key == keyword]

    def env(self) -> dict[str, str]:
        """Every ``ENV NAME=value`` of the stage (the only ENV form the Dockerfile uses)."""
        pairs = (item.split("=", 1) for args in self.arguments("ENV") for item in shlex.split(args))
        return dict(pairs)

    def copies(self) -> list[tuple[list[str], str]]:
        """``COPY`` instructions as (sources, destination), flags such as --from left out."""
        result = []
        for args in self.arguments("COPY"):
            words = [word for word in args.split() if not word.startswith("--")]
            result.append((words[:-1], words[-1]))
        return result

    def runs(self) -> list[str]:
        """The shell commands of ``RUN`` instructions, their own flags (--mount=...) left out."""
        return [re.sub(r"^(--\S+\s+)*", "", args) for args in self.arguments("RUN")]

    def workdir(self) -> str:
        (path,) = self.arguments("WORKDIR")
        return path

    def healthcheck(self) -> list[str]:
        """The exec-form command of ``HEALTHCHECK ... CMD [...]``."""
        (args,) = self.arguments("HEALTHCHECK")
        return json.loads(args.split(" CMD ", 1)[1])


def logical_lines(text: str) -> list[str]:
    """Instructions with their continuation lines joined; comments and blank lines dropped."""
    lines, current = [], ""
    for raw in text.splitlines():
        if raw.strip().startswith("#") or not raw.strip():
            continue
        if raw.rstrip().endswith("\\"):
            current += raw.rstrip()[:-1].strip() + " "
            continue
        lines.append(current + raw.strip())
        current = ""
    return lines


def read_stages(path: Path = DOCKERFILE) -> dict[str, Stage]:
    """Stages by name, in order; the last one is the image that ships."""
    stages: dict[str, Stage] = {}
    for line in logical_lines(path.read_text()):
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else str(len(stages))
            stages[name] = Stage(base=words[0], name=name)
        elif stages:
            stages[list(stages)[-1]].instructions.append((keyword, args))
    return stages


def runtime_stage(path: Path = DOCKERFILE) -> Stage:
    return list(read_stages(path).values())[-1]
