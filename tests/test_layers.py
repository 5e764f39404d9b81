"""The package's layers point one way, core <- gen <- train <- eval <- cli, and no module imports
a module that imports it back. Imports inside functions count too."""

import ast
import pathlib

SRC = pathlib.Path(__file__).resolve().parents[1] / "src"
RANK = {"core": 0, "gen": 1, "train": 2, "eval": 3}  # anything else (cli, __init__): the top


def modules() -> dict[str, pathlib.Path]:
    out = {}
    for path in (SRC / "captchalab").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imported(path: pathlib.Path, known) -> set[str]:
    """captchalab modules that `path` imports (`from pkg import mod` names the module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("captchalab"))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("captchalab"):
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                found.add(sub if sub in known else node.module)
    return found


def rank(module: str) -> int:
    parts = module.split(".")
    return RANK.get(parts[1], len(RANK)) if len(parts) > 1 else len(RANK)


def graph() -> dict[str, set[str]]:
    known = modules()
    return {m: imported(p, known) - {m} for m, p in known.items()}


def test_imports_point_down():
    upward = [f"{m} imports {d}" for m, deps in graph().items() for d in deps
              if rank(d) > rank(m)]
    assert not upward, "\n".join(sorted(upward))


def test_no_import_cycles():
    g = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(m, path):
        state[m] = 1
        for d in sorted(g.get(m, ())):
            if state.get(d) == 1:
                cycles.append(" -> ".join(path[path.index(d):] + [d]))
            elif d not in state:
                visit(d, path + [d])
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m, [m])
    assert not cycles, "\n".join(cycles)


def test_the_checks_see_an_upward_import(tmp_path):
    """The checker itself: a core module importing from eval is caught."""
    bad = tmp_path / "m.py"
    bad.write_text("def f():\n    from captchalab.eval import report\n")
    deps = imported(bad, modules())
    assert "captchalab.eval.report" in deps and rank("captchalab.eval.report") > rank(
        "captchalab.core.charset")
