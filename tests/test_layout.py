"""The shape of the code that others build on: the state machine as one table, SQL only in the store, the module
map and the README's schema matching the code, and the CLI starting without the openai SDK."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

import runner
from runner.commands import cancel_requests
from runner.errors import StateConflict
from runner.jobfile import ingest
from runner.limits import Limits
from runner.store import TRANSITIONS, Move, State, Store
from runner.store.schema import describe

from .conftest import ROOT, chat_line, write_jsonl

PACKAGE = ROOT / "runner"


def test_every_move_is_allowed_from_its_sources_and_from_nowhere_else(tmp_path: Path, limits: Limits) -> None:
    store = Store(tmp_path / "walk.db")
    path = write_jsonl(tmp_path / "job.jsonl", [chat_line(f"r{i}") for i in range(len(State))])
    store.runs.acquire("job", str(path))
    ingest(store, "job", path, limits)
    ids = {state: i + 1 for i, state in enumerate(State)}
    for move, transition in TRANSITIONS.items():
        for state, rid in ids.items():
            with store.transaction():
                store.conn.execute("UPDATE requests SET state=? WHERE id=?", (state.value, rid))
            allowed = state in transition.sources
            if allowed:
                store._move_one(move, rid, "walk")
                assert store.conn.execute("SELECT state FROM requests WHERE id=?", (rid,)).fetchone()[0] == (
                    transition.target.value
                ), (move, state)
            else:
                with pytest.raises(StateConflict), store.transaction():
                    store._move_one(move, rid, "walk")
    assert {t.target for t in TRANSITIONS.values()} == set(State), "every state is reachable"
    leaving = {move for move, t in TRANSITIONS.items() if t.sources & {State.SUCCEEDED, State.FAILED, State.CANCELLED}}
    assert leaving == {Move.REOPEN}, "final states are final, but a failure may be reopened by a later run"


def test_cancel_withdraws_pending_requests_for_good(tmp_path: Path, store: Store, limits: Limits) -> None:
    path = write_jsonl(tmp_path / "job.jsonl", [chat_line(f"r{i}") for i in range(4)])
    owner = store.runs.acquire("job", str(path))
    ingest(store, "job", path, limits)
    store.requests.claim("job", owner, 1)  # r0 in flight: not cancelled
    store.runs.release("job", owner)
    assert cancel_requests(store, "job", ["r1", "nope"]).cancelled == 1
    assert cancel_requests(store, "job").cancelled == 3
    assert store.requests.counts("job")["cancelled"] == 4
    owner = store.runs.acquire("job", str(path))
    assert store.requests.claim("job", owner, 10) == []  # never sent
    with pytest.raises(StateConflict):
        store._move_one(Move.CLAIM, 1, "a cancelled request")


def test_no_sql_outside_the_store_package() -> None:
    pattern = re.compile(r"\b(SELECT [\w*(]|INSERT INTO|UPDATE \w+ SET|DELETE FROM|CREATE TABLE|PRAGMA)\b")
    offenders = []
    for file in PACKAGE.rglob("*.py"):
        if "store" in file.relative_to(PACKAGE).parts:
            continue
        for number, line in enumerate(file.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if pattern.search(code) and ("execute" in code or '"' in code):
                offenders.append(f"{file.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == []


def test_the_module_map_names_every_module_and_only_those() -> None:
    documented = set(re.findall(r"^    (\w+/?)\s", runner.__doc__ or "", re.MULTILINE))
    present = {p.stem for p in PACKAGE.glob("*.py") if not p.stem.startswith("__")}
    present |= {f"{p.name}/" for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert documented == present
    for package in ("batch", "store", "sim", "sync"):
        line = re.search(rf"^    {package}/\s+(.*?)(?=^    \w|\Z)", runner.__doc__ or "", re.MULTILINE | re.DOTALL)
        assert line is not None
        modules = {p.stem for p in (PACKAGE / package).glob("*.py") if not p.stem.startswith("__")}
        assert modules <= set(re.findall(r"\w+", line.group(1))), package


def test_the_readme_schema_section_is_the_code_s() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("<!-- schema:begin -->\n", 1)[1].split("<!-- schema:end -->", 1)[0]
    assert section == describe(), "regenerate: python -m runner.store.schema"


def test_the_cli_starts_without_the_openai_sdk() -> None:
    code = "import sys, runner.cli; print('openai' in sys.modules)"
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert shown.stdout.strip() == "False"


@pytest.mark.parametrize("module", ["batches", "files", "faults", "http", "buckets", "answers", "admin"])
def test_simulator_services_do_not_import_the_server(module: str) -> None:
    """No cycle: the server wires the services; none of them imports it (not even for types)."""
    tree = ast.parse((PACKAGE / "sim" / f"{module}.py").read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert "runner.sim.server" not in imported and "runner.sim" not in imported


# the client's rules the simulator judges: it counts, reserves, caches, prices and reads endpoints with its own code
CLIENT_RULES = {"runner.tokens", "runner.caching", "runner.pricing", "runner.endpoints", "runner.budget",
                "runner.workload", "runner.planner", "runner.gate", "runner.gates", "runner.evidence"}  # fmt: skip


def test_the_simulator_is_a_judge_that_shares_no_rule_with_the_client() -> None:
    """If the simulator counted with the client's functions it would agree with the client by construction. It may
    use the tier data (runner.limits), the tokenizer files (runner.encodings), the error tree and duration syntax."""
    offenders = []
    for file in (PACKAGE / "sim").glob("*.py"):
        tree = ast.parse(file.read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        named = {f"runner.{a.name}" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "runner"
                 for a in n.names}  # fmt: skip
        offenders += [f"{file.name}: {m}" for m in sorted((imported | named) & CLIENT_RULES)]
    assert offenders == []


def test_no_module_imports_one_that_imports_it_back() -> None:
    """Import cycles (even for types only) tangle modules a reader wants to take one at a time."""
    modules: dict[str, set[str]] = {}
    for file in PACKAGE.rglob("*.py"):
        name = ".".join(file.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        tree = ast.parse(file.read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        imported |= {f"{n.module}.{a.name}" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module
                     for a in n.names}  # fmt: skip
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        modules[name] = imported
    graph = {m: {d for d in deps if d in modules and d != m} for m, deps in modules.items()}

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph[todo.pop()] - seen:
                if nxt == goal:
                    return True
                seen.add(nxt)
                todo.append(nxt)
        return False

    cycles = sorted(f"{m} <-> {d}" for m in graph for d in graph[m] if m < d and reaches(d, m))
    assert cycles == []


def test_every_pacing_constant_is_in_the_constants_table() -> None:
    """docs/pacing.md names every constant of the gate, the evidence and the candidates with the reason for its
    value (issue 18); a constant added without a row there fails here. ``DIMENSIONS`` is names, not a value, and
    ``START_COST`` follows from two others (its equation is under "Start")."""
    table = (ROOT / "docs" / "pacing.md").read_text().split("## Constants and why", 1)[1]
    missing = []
    for module in ("gate", "evidence", "candidates"):
        tree = ast.parse((PACKAGE / f"{module}.py").read_text())
        targets = [t for n in tree.body if isinstance(n, ast.Assign) for t in n.targets]
        names = [t.id for t in targets if isinstance(t, ast.Name)]
        names += [e.id for t in targets if isinstance(t, ast.Tuple) for e in t.elts if isinstance(e, ast.Name)]
        missing += [f"{module}.{name}" for name in names if name.isupper() and f"`{name}`" not in table]
    assert sorted(missing) == ["gate.DIMENSIONS", "gate.START_COST"]
