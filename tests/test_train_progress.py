"""made-train's progress output: a bar on a terminal, one summary line per epoch in a log."""

import os
import pty
import re
import select
import subprocess
import sys
import termios
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
MADE_TRAIN = Path(sys.executable).with_name("made-train")
EPOCHS = 2
ARGS = ["--preset", "digits", "--epochs", str(EPOCHS), "--masks", "2", "--hidden", "16"]
SUMMARY = re.compile(r"epoch (\d+): train [\d.]+ valid mixture [\d.]+")
BAR = re.compile(rf"epoch \d/{EPOCHS}:.*batch")  # tqdm's "epoch 1/2: 40%|...| 10/24 [...batch/s"


def test_stderr_that_is_not_a_terminal_gets_one_line_per_epoch_and_no_bar(tmp_path: Path) -> None:
    done = subprocess.run(
        [MADE_TRAIN, *ARGS, "--out", tmp_path / "run"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr and not BAR.search(done.stderr), done.stderr
    epochs = [int(m.group(1)) for line in done.stderr.splitlines() if (m := SUMMARY.search(line))]
    assert epochs == list(range(1, EPOCHS + 1)), done.stderr


def read_terminal(master: int, deadline_s: float) -> bytes:
    """Everything written to the pty until its last writer closes it."""
    chunks = []
    while select.select([master], [], [], deadline_s)[0]:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def test_a_terminal_still_gets_the_bar(tmp_path: Path) -> None:
    master, terminal = pty.openpty()
    termios.tcsetwinsize(terminal, (24, 100))  # a new pty is 0 columns wide: tqdm would draw ""
    try:
        process = subprocess.Popen(
            [MADE_TRAIN, *ARGS, "--out", tmp_path / "run"],
            stdout=subprocess.DEVNULL,
            stderr=terminal,
            cwd=tmp_path,
        )
        os.close(terminal)
        output = read_terminal(master, deadline_s=300).decode(errors="replace")
        assert process.wait(timeout=60) == 0, output
    finally:
        os.close(master)
    assert BAR.search(output), output
