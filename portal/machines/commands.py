"""Running commands: one machine (run_command) or many in parallel (broadcast), and the
command log rows they write. No DB connection is held while a command runs.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

from portal import metrics, signals, ssh
from portal.accounts import stepup
from portal.db import utcnow
from portal.errors import (
    CommandTimeout,
    HostKeyError,
    MachineUnreachable,
    NotFound,
    PortalError,
    ValidationError,
)
from portal.extensions import db
from portal.machines.access import (
    can,
    require,
    roles_for,
)
from portal.machines.inventory import get_machine, list_machines
from portal.machines.models import (
    OUTPUT_EXCERPT,
    SOURCES,
    CommandLog,
    Machine,
)
from portal.machines.targets import ssh_target, system_target
from portal.validation import get_int

log = logging.getLogger(__name__)

MAX_TIMEOUT = 600


DEFAULT_TIMEOUT = 30


MAX_COMMAND = 16 * 1024


BROADCAST_MAX = 100


BROADCAST_MAX_OUTPUT = 64 * 1024


def excerpt(stdout: str, stderr: str) -> str:
    text = (
        stdout
        if not stderr
        else (stdout + ("\n" if stdout and not stdout.endswith("\n") else "") + stderr)
    )
    return text[:OUTPUT_EXCERPT]


def log_command(
    machine: Machine,
    user,
    *,
    source: str,
    command: str,
    exit_code: int | None = None,
    output: str = "",
    duration_ms: int | None = None,
    session_id: str | None = None,
    session=None,
    offset_ms: int | None = None,
) -> CommandLog:
    """Record one command (flush only). `output` is cut to a 4 KiB excerpt."""
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}")
    s = session or db.session
    entry = CommandLog(
        machine_id=machine.id if isinstance(machine, Machine) else int(machine),
        user_id=getattr(user, "id", user),
        session_id=session_id,
        offset_ms=offset_ms,
        source=source,
        command=(command or "")[:MAX_COMMAND],
        exit_code=exit_code,
        output=(output or "")[:OUTPUT_EXCERPT],
        duration_ms=duration_ms,
    )
    s.add(entry)
    s.flush()
    return entry


# Programs that draw on a terminal (full-screen or interactive): run without one (the
# "Run a command" box, the API, broadcast) they exit with an error or hang on input.
NEEDS_TERMINAL = frozenset(
    "top htop btop atop vim vi nvim nano emacs less more man watch tmux screen mc ssh "
    "mysql psql python python3 bash sh zsh".split()
)


def needs_terminal(command: str) -> bool:
    """True when the command starts with a program that needs a terminal (e.g. `top`,
    `sudo vim x`), so a page can say "open a terminal" instead of a bare exit code."""
    words = (command or "").strip().split()
    while words and (words[0] in ("sudo", "env", "nice", "exec") or "=" in words[0]):
        words = words[1:]
    if not words:
        return False
    program = words[0].rsplit("/", 1)[-1]
    if program in ("python", "python3", "bash", "sh", "zsh", "mysql", "psql", "ssh"):
        return len(words) == 1  # with arguments these usually run a script or a query
    return program in NEEDS_TERMINAL


def command_args(data: dict) -> tuple[str, int]:
    command = data.get("command")
    if not isinstance(command, str):
        raise ValidationError("command must be a string", field="command")
    if not command.strip():
        raise ValidationError("the command is empty", field="command")
    if len(command) > MAX_COMMAND:
        raise ValidationError(
            f"the command is longer than {MAX_COMMAND} characters", field="command"
        )
    if "\x00" in command:
        raise ValidationError("the command contains a NUL byte", field="command")
    timeout = get_int(data, "timeout", default=DEFAULT_TIMEOUT, min_value=1, max_value=MAX_TIMEOUT)
    return command, timeout


def _record_outside(machine_id: int, user_id, *, status=None, message=None, log=None):
    """Persist a status change / log of a failed run in its own transaction (the request's
    transaction is rolled back for a 5xx)."""
    s = db.new_session()
    try:
        m = s.get(Machine, machine_id)
        if m is not None and status:
            m.status = status
            m.status_message = (message or "")[:500] or None
        if log is not None:
            log_command(machine_id, user_id, session=s, **log)
        s.commit()
    except Exception:
        s.rollback()
        log_exc = logging.getLogger(__name__)
        log_exc.exception("could not record the failed run")
    finally:
        s.close()


def _timed_run(target, command: str, timeout):
    """ssh.run, with its latency observed by outcome (ok, timeout, failed) for /metrics."""
    started = time.perf_counter()
    outcome = "failed"
    try:
        result = ssh.run(target, command, timeout=timeout)
        outcome = "ok"
        return result
    except CommandTimeout:
        outcome = "timeout"
        raise
    finally:
        metrics.EXEC_LATENCY.labels(outcome).observe(time.perf_counter() - started)


def run_command(
    user, machine: Machine, data: dict, *, source: str = "api"
) -> tuple[ssh.ExecResult, CommandLog]:
    """Run one command (operator). A failing command is a result; unreachable 502, timeout 504."""
    require(user, machine, "run_command")
    command, timeout = command_args(data)
    target = ssh_target(machine, user)
    db.release()  # no DB connection (or SQLite write lock) held while the command runs
    try:
        result = _timed_run(target, command, timeout)
    except CommandTimeout:
        _record_outside(
            machine.id,
            user.id,
            log={
                "source": source,
                "command": command,
                "exit_code": None,
                "output": f"[timed out after {timeout} s]",
                "duration_ms": timeout * 1000,
            },
        )
        raise CommandTimeout(
            f"the command did not finish within {timeout} s and was stopped", timeout=timeout
        ) from None
    except HostKeyError as err:
        _record_outside(machine.id, user.id, status="error", message=err.message)
        raise
    except MachineUnreachable as err:
        status = "error" if isinstance(err, ssh.AuthenticationFailed) else "offline"
        _record_outside(machine.id, user.id, status=status, message=err.message)
        raise
    entry = log_command(
        machine,
        user,
        source=source,
        command=command,
        exit_code=result.exit_code,
        output=excerpt(result.stdout, result.stderr),
        duration_ms=result.duration_ms,
    )
    machine.status = "online"
    machine.status_message = None
    machine.last_seen_at = utcnow()
    db.session.flush()
    signals.send(
        signals.command_run,
        user=user,
        machine=machine,
        command=command,
        source=source,
        exit_status=result.exit_code,
    )
    return result, entry


def result_dict(result: ssh.ExecResult, entry: CommandLog | None) -> dict:
    return {
        "exit_code": result.exit_code,
        "stdout": result.stdout,
        "stderr": result.stderr,
        "duration_ms": result.duration_ms,
        "truncated": result.truncated,
        "log_id": entry.id if entry else None,
    }


def broadcast_machines(user, data: dict) -> list[Machine]:
    """The machines a broadcast targets: `agent_ids` (list) or `tag`; operator on each."""
    agent_ids = data.get("agent_ids")
    tag = data.get("tag")
    if agent_ids in (None, [], "") and not tag:
        raise ValidationError("choose machines (agent_ids) or a tag", field="agent_ids")
    if agent_ids not in (None, [], ""):
        if not isinstance(agent_ids, list) or not all(isinstance(a, str) for a in agent_ids):
            raise ValidationError("agent_ids must be a list of strings", field="agent_ids")
        if len(agent_ids) > BROADCAST_MAX:
            raise ValidationError(f"at most {BROADCAST_MAX} machines", field="agent_ids")
        machines = [get_machine(user, a) for a in dict.fromkeys(agent_ids)]
        for m in machines:
            require(user, m, "broadcast")
    else:
        if not isinstance(tag, str):
            raise ValidationError("tag must be a string", field="tag")
        rows, _ = list_machines(user, tag=tag.strip().lower(), limit=BROADCAST_MAX)
        roles = roles_for(user, rows)
        machines = [m for m in rows if can(user, m, "broadcast", roles[m.id])]
        if not machines:
            raise NotFound("no machine you can operate has that tag", field="tag")
    if len(machines) > 1:
        stepup.require(user, "command.broadcast")
    return machines


def run_parallel(targets: dict[int, object], command: str, timeout: int):
    """Yield (machine_id, ExecResult | PortalError) as each finishes; one thread per machine
    (bounded), connections through the shared pool."""

    def one(target):
        if isinstance(target, PortalError):
            return target
        try:
            return ssh.run(target, command, timeout=timeout, max_output=BROADCAST_MAX_OUTPUT)
        except PortalError as err:
            return err
        except Exception as exc:  # never let one machine break the others
            return MachineUnreachable(f"unexpected error: {type(exc).__name__}")

    if not targets:
        return
    with ThreadPoolExecutor(
        max_workers=min(32, len(targets)), thread_name_prefix="broadcast"
    ) as ex:
        futures = {ex.submit(one, t): mid for mid, t in targets.items()}
        for fut in as_completed(futures):
            yield futures[fut], fut.result()


def broadcast_targets(machines: list[Machine], user) -> dict[int, object]:
    """machine id -> its Target for `user`, or the PortalError that refused it. With
    user=None: the portal's own probe (system_target)."""
    out: dict[int, object] = {}
    for m in machines:
        try:
            out[m.id] = ssh_target(m, user) if user is not None else system_target(m)
        except PortalError as err:
            out[m.id] = err
    return out


def broadcast_entry(
    machine: Machine, outcome, user, command: str, timeout: int, session=None
) -> dict:
    """Log one machine's outcome and describe it (shared by the API and the page)."""
    base = {"agent_id": machine.agent_id, "name": machine.name}
    if isinstance(outcome, PortalError):
        if isinstance(outcome, CommandTimeout):
            log_command(
                machine.id,
                user.id,
                source="broadcast",
                command=command,
                output=f"[timed out after {timeout} s]",
                duration_ms=timeout * 1000,
                session=session,
            )
        signals.send(
            signals.command_run,
            user=user,
            machine=machine,
            command=command,
            source="broadcast",
            exit_status=None,
        )
        return {
            **base,
            "ok": False,
            "error": outcome.message,
            "code": outcome.code,
            "status": outcome.status,
        }
    entry = log_command(
        machine.id,
        user.id,
        source="broadcast",
        command=command,
        exit_code=outcome.exit_code,
        output=excerpt(outcome.stdout, outcome.stderr),
        duration_ms=outcome.duration_ms,
        session=session,
    )
    signals.send(
        signals.command_run,
        user=user,
        machine=machine,
        command=command,
        source="broadcast",
        exit_status=outcome.exit_code,
    )
    return {**base, "ok": True, **result_dict(outcome, entry)}


class Broadcast:
    """A broadcast whose machines are checked and whose targets are built; `results()`
    runs it."""

    def __init__(self, user, machines: list[Machine], command: str, timeout: int, targets):
        self.user, self.machines = user, machines
        self.command, self.timeout, self.targets = command, timeout, targets

    def results(self):
        """Yield (machine, entry) as each machine finishes. Each outcome is logged in a
        session of its own and committed at once: no transaction (on SQLite, no write lock)
        stays open while the slowest machine runs."""
        by_id = {m.id: m for m in self.machines}
        s = db.new_session()
        try:
            for mid, outcome in run_parallel(self.targets, self.command, self.timeout):
                m = by_id[mid]
                entry = broadcast_entry(m, outcome, self.user, self.command, self.timeout, s)
                if entry["ok"]:
                    live = s.get(Machine, mid)
                    if live is not None:
                        live.status, live.status_message, live.last_seen_at = (
                            "online",
                            None,
                            utcnow(),
                        )
                s.commit()
                yield m, entry
        finally:
            s.close()


def start_broadcast(user, data: dict) -> Broadcast:
    """Check the command and every machine (operator on each), build the targets, and give
    the request's DB connection back before anything connects."""
    command, timeout = command_args(data)
    machines = broadcast_machines(user, data)
    targets = broadcast_targets(machines, user)
    db.release()
    return Broadcast(user, machines, command, timeout, targets)


def broadcast(user, data: dict) -> list[dict]:
    """Run a command on many machines in parallel; one entry per machine, in request order."""
    run = start_broadcast(user, data)
    results = {m.id: entry for m, entry in run.results()}
    return [results[m.id] for m in run.machines]
