"""The import directions docs/mfa.md and docs/architecture.md promise, read from the source:
the accounts services stack in one order, the terminal package has no cycle, and no module
dodges a cycle with an import inside a function (which hides the dependency until that
function runs). Wiring is the exception: the app factory and each feature's `init_app`, the
CLI commands, gunicorn's hooks."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PORTAL = Path(__file__).resolve().parent.parent / "portal"

# Bottom first: each may import only those before it (docs/mfa.md).
ACCOUNTS_LAYERS = ["factors", "passkeys", "tokens", "stepup", "users", "mfa"]


def _portal_imports(path: Path) -> list[tuple[str, bool]]:
    """(imported portal module, at module level?) for every import of `portal...` in path.
    `from portal.x import y` counts as portal.x.y when portal/x/y.py exists, else portal.x."""
    tree = ast.parse(path.read_text(), filename=str(path))
    top = {id(node) for node in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("portal")]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("portal"):
            names = []
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                rel = Path(*sub.split("."))
                is_module = (PORTAL.parent / rel).with_suffix(".py").exists() or (
                    PORTAL.parent / rel / "__init__.py"
                ).exists()
                names.append(sub if is_module else node.module)
        else:
            continue
        out.extend((name, id(node) in top) for name in names)
    return out


@pytest.mark.parametrize("name", ACCOUNTS_LAYERS)
def test_an_accounts_service_imports_only_the_services_below_it(name):
    below = set(ACCOUNTS_LAYERS[: ACCOUNTS_LAYERS.index(name)])
    found = _portal_imports(PORTAL / "accounts" / f"{name}.py")
    for module, at_top in found:
        assert at_top, f"accounts/{name}.py imports {module} inside a function"
        other = module.removeprefix("portal.accounts.")
        if other in ACCOUNTS_LAYERS:
            assert other in below, f"accounts/{name}.py imports {other}, which is above it"


def test_the_terminal_package_imports_at_module_level_without_a_cycle():
    package = PORTAL / "terminal"
    graph: dict[str, set[str]] = {}
    for path in sorted(package.glob("*.py")):
        if path.name == "__init__.py":
            continue  # init_app wires the package into the app: it imports its parts
        name = path.stem
        graph[name] = set()
        for module, at_top in _portal_imports(path):
            assert at_top, f"terminal/{path.name} imports {module} inside a function"
            if module.startswith("portal.terminal."):
                graph[name].add(module.removeprefix("portal.terminal."))

    state: dict[str, str] = {}

    def visit(node: str, trail: list[str]) -> None:
        if state.get(node) == "done":
            return
        assert state.get(node) != "open", "import cycle: " + " -> ".join([*trail, node])
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            visit(nxt, [*trail, node])
        state[node] = "done"

    for node in graph:
        visit(node, [])


# Where an import inside a function is the design, not a dodge.
WIRING = {
    "__init__.py": "the app factory and each feature's init_app wire the parts into the app",
    "cli.py": "a command loads what it runs when it runs",
    "gunicorn_conf.py": "gunicorn's hooks run in the master and workers, before the app exists",
    "formlimits.py": "the table of every form's limits, read from each feature on first use",
}


def test_no_module_imports_a_portal_module_inside_a_function():
    found = []
    for path in sorted(PORTAL.rglob("*.py")):
        rel = path.relative_to(PORTAL).as_posix()
        if path.name in WIRING:
            continue
        for module, at_top in _portal_imports(path):
            if at_top:
                continue
            if rel == "web.py" and module == "portal.formlimits":
                continue  # web.init_app installs the table (wiring)
            found.append(f"{rel}: {module}")
    assert found == []
