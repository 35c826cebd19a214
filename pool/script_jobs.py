"""Script jobs: the built-in ``pool.script`` handler runs an executable as a job.

    pool enqueue pool.yaml pool.script examples/scripts/report.sh 2026-11 --wait

Only executables under ``scripts.allowed_dirs`` of pool.yaml run (symlinks and ``..`` are resolved
first, so nothing escapes); the handler is registered only when that list is set. The process
gets its own session: on timeout or cancellation the whole process group is killed, so no
grandchild outlives its job. Exit 0 completes the job with its output; any other exit fails it
(retries apply as for any failure). stdout and stderr are captured up to
``scripts.max_output`` bytes each.

A script does not inherit the pool's environment, which holds its secrets (``REDIS_PASSWORD``,
whatever pool.yaml reads with ``${VAR}``): a script that prints its environment would store them
in its job's result. It gets a base set that programs need to behave as in a shell (PATH, HOME,
USER, LOGNAME, SHELL, LANG, LANGUAGE, LC_*, TZ, TMPDIR) and the variables ``scripts.env`` names;
config.py refuses to name there a variable the Redis settings are read from.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pool.config import ScriptSettings
from pool.errors import PoolError

SCRIPT_HANDLER = "pool.script"
_TAIL = 2000  # characters of stderr quoted in the error line
BASE_ENV = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR")


class ScriptError(PoolError):
    """Base of script job failures; ``details`` is shown as the job's remote traceback."""

    details: str | None = None


class ScriptRefused(ScriptError):
    """The script was refused before anything ran: the message says it all, so no traceback."""

    details = ""


class ScriptNotAllowed(ScriptRefused):
    """The path is outside ``scripts.allowed_dirs``."""


class ScriptNotFound(ScriptRefused):
    """No file at the path."""


class ScriptNotExecutable(ScriptRefused):
    """The file exists but may not be executed."""


class ScriptFailed(ScriptError):
    """The script ran and exited with a code other than 0."""

    def __init__(self, message: str, result: dict[str, Any]) -> None:
        super().__init__(message)
        self.result = result
        self.details = f"--- stdout ---\n{result['stdout']}\n--- stderr ---\n{result['stderr']}"


def resolve(path: str, settings: ScriptSettings, base_dir: Path) -> str:
    """The real path of an allowed, existing, executable script.

    Raises:
        ScriptNotAllowed, ScriptNotFound, ScriptNotExecutable: with the reason and the fix.
    """
    candidate = Path(path) if Path(path).is_absolute() else base_dir / path
    real = os.path.realpath(candidate)
    allowed = [os.path.realpath(d) for d in settings.allowed_dirs]
    if not any(os.path.commonpath([real, d]) == d for d in allowed):
        raise ScriptNotAllowed(f"{path} is outside scripts.allowed_dirs ({', '.join(allowed) or 'none'}); "
                               "move it there or add its folder in pool.yaml")
    if not os.path.isfile(real):
        raise ScriptNotFound(f"{path}: no such file")
    if not os.access(real, os.X_OK):
        raise ScriptNotExecutable(f"{path} is not executable (chmod +x it)")
    return real


async def _read_bounded(stream: asyncio.StreamReader, limit: int) -> tuple[str, bool]:
    """Read a stream to its end, keeping the first ``limit`` bytes; (text, truncated)."""
    kept = bytearray()
    truncated = False
    while chunk := await stream.read(65536):
        room = limit - len(kept)
        if room > 0:
            kept += chunk[:room]
        truncated = truncated or len(chunk) > room
    return kept.decode(errors="replace"), truncated


def script_environment(settings: ScriptSettings, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a script runs with: the base set, the locale, and ``scripts.env``.

    Args:
        settings: the config's ``scripts`` section.
        environ: the pool's own environment (default ``os.environ``).
    """
    environ = os.environ if environ is None else environ
    names = {*BASE_ENV, *settings.env, *(name for name in environ if name.startswith("LC_"))}
    scrubbed = {name: environ[name] for name in names if name in environ}
    scrubbed.setdefault("PATH", os.defpath)
    return scrubbed


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def make_handler(settings: ScriptSettings, base_dir: Path) -> Any:
    """The ``pool.script`` handler for these settings."""

    async def script(path: str, *args: Any) -> dict[str, Any]:
        """Run ``path`` with ``args``; returns exit_code, stdout, stderr and truncated."""
        executable = resolve(path, settings, base_dir)
        proc = await asyncio.create_subprocess_exec(
            executable, *(str(a) for a in args), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True,
            env=script_environment(settings),
        )
        assert proc.stdout is not None and proc.stderr is not None
        readers = asyncio.gather(_read_bounded(proc.stdout, settings.max_output_bytes),
                                 _read_bounded(proc.stderr, settings.max_output_bytes))
        try:
            # The script is done when it exits. Background children it left would hold its pipes
            # open (and the job) until the timeout, and on Python 3.11 proc.wait() itself waits for
            # the pipes; returncode is set at the exit, so watch both, then end the group.
            while not readers.done() and proc.returncode is None:
                await asyncio.wait({readers}, timeout=0.05)
            _kill_group(proc.pid)
            (out, out_cut), (err, err_cut) = await readers
            code = await proc.wait()
        except BaseException:  # timeout or cancellation: no process of the group may outlive the job
            _kill_group(proc.pid)
            readers.cancel()
            with contextlib.suppress(ProcessLookupError):
                await asyncio.shield(proc.wait())
            raise
        result = {"exit_code": code, "stdout": out, "stderr": err, "truncated": out_cut or err_cut}
        if code != 0:
            tail = err.strip()[-_TAIL:]
            raise ScriptFailed(f"{path} exited with code {code}" + (f": {tail}" if tail else ""), result)
        return result

    script.__module__, script.__qualname__ = "pool", "script"
    return script
