"""The layering rules, read from every module's imports (function-level ones included).

- ``schemas`` imports only ``schemas``;
- ``infra`` imports only ``schemas`` and itself;
- ``services/<name>`` imports ``schemas``, ``infra``, ``services.common`` and itself, never
  another service (and never the composition root ``sonae``);
- ``services.common`` imports ``schemas``, ``infra`` and itself;
- ``sonae`` is the composition root and may import anything;
- a test module never imports another test module (shared helpers live in ``tests/support``).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIRST_PARTY = ("schemas", "infra", "services", "sonae", "tests", "benchmarks")


def modules(package: str) -> Iterator[tuple[str, Path]]:
    """(dotted module name, path) for every module under ``package``."""
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def imported(module: str, path: Path) -> Iterator[tuple[int, str]]:
    """(line, dotted name) of every first-party import in the module, relative ones resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                prefix = ".".join(base)
                names = [f"{prefix}.{node.module}" if node.module else prefix]
            else:
                names = [node.module or ""]
        else:
            continue
        for name in names:
            if name.split(".")[0] in FIRST_PARTY:
                yield node.lineno, name


def allowed(module: str, target: str) -> bool:
    """Whether ``module`` may import ``target`` under the layering rules."""
    top = target.split(".")[0]
    if module.startswith("sonae"):
        return top != "tests" and top != "benchmarks"
    if module.startswith("schemas"):
        return top == "schemas"
    if module.startswith("infra"):
        return top in ("schemas", "infra")
    if module.startswith("services"):
        if top in ("schemas", "infra"):
            return True
        if top != "services":
            return False
        own = module.split(".")[:2]
        wanted = target.split(".")[:2]
        return wanted == own or wanted == ["services", "common"]
    raise AssertionError(f"no rule for {module}")


def violations(package: str) -> list[str]:
    """Every import of ``package``'s modules that breaks the rules, as ``path:line: a -> b``."""
    return [
        f"{path.relative_to(ROOT)}:{line}: {module} -> {target}"
        for module, path in modules(package)
        for line, target in imported(module, path)
        if not allowed(module, target)
    ]


def test_schemas_import_only_schemas() -> None:
    """The contracts stand on nothing of the project's but themselves."""
    assert violations("schemas") == []


def test_infra_imports_only_schemas_and_libraries() -> None:
    """The lowest layer never reaches up into the services or the composition root."""
    assert violations("infra") == []


def test_a_service_imports_no_other_service() -> None:
    """Each service stands on schemas, infra and services.common alone."""
    assert violations("services") == []


def test_the_rules_catch_a_forbidden_import() -> None:
    """The checker itself: a service importing another service, or infra a service, is caught."""
    assert not allowed("services.drill.runner", "services.evacuation.app")
    assert not allowed("services.intake.http", "sonae.registry")
    assert not allowed("infra.topics", "services.registry")
    assert not allowed("schemas.events", "infra.settings")
    assert allowed("services.drill.runner", "services.drill.watch")
    assert allowed("services.gateway.server", "services.common.auth")
    assert allowed("sonae.stack", "services.recorder.rehydrate")


def test_no_test_module_imports_another() -> None:
    """Tests share helpers through tests/support, never by importing each other's modules."""
    bad = [
        f"{path.relative_to(ROOT)}:{line}: {target}"
        for module, path in modules("tests")
        for line, target in imported(module, path)
        if target.split(".")[-1].startswith("test_") or ".test_" in target
    ]
    assert bad == []


# Names that look like settings but are not process settings: a constant, the field
# client's --token option (click reads it), the golden tests' regeneration switch.
NOT_SETTINGS = {"SONAE_ID_NAMESPACE", "SONAE_TOKEN", "SONAE_UPDATE_GOLDEN"}


def test_every_sonae_variable_is_a_settings_field_in_the_readme() -> None:
    """No SONAE_* variable is read around the settings model, and each is documented."""
    import re

    from infra.settings import ENV_PREFIX, Settings

    fields = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    named = {
        match
        for package in ("schemas", "infra", "services", "sonae")
        for _, path in modules(package)
        for match in re.findall(r"SONAE_[A-Z_]+[A-Z]", path.read_text(encoding="utf-8"))
    }
    assert sorted(named - fields - NOT_SETTINGS) == []
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert sorted(v for v in fields if v not in readme) == []
    # Read through the settings model, never from the environment around it.
    around = [
        f"{path.relative_to(ROOT)}: {hit}"
        for package in ("services", "sonae")
        for _, path in modules(package)
        for hit in re.findall(r"environ\S*SONAE_\w+|getenv\([^)]*SONAE_\w+",
                              path.read_text(encoding="utf-8"))
    ]
    assert around == []


def test_no_two_exception_classes_share_a_name() -> None:
    """An error's name says which package raised it: no name is defined in two packages."""
    classes: list[tuple[str, str, set[str]]] = []  # (module, class, names of its bases)
    for package in ("schemas", "infra", "services", "sonae"):
        for module, path in modules(package):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ClassDef):
                    bases = {b.id if isinstance(b, ast.Name) else getattr(b, "attr", "")
                             for b in node.bases}
                    classes.append((module, node.name, bases))
    # Exceptions: derived from a built-in *Error/Exception, or from another exception here.
    errors = {"Exception", "BaseException"}
    changed = True
    while changed:
        found = {name for _, name, bases in classes
                 if any(b in errors or b.endswith(("Error", "Exception")) for b in bases)}
        changed = not found <= errors
        errors |= found
    where: dict[str, set[str]] = {}
    for module, name, _ in classes:
        if name in errors:
            where.setdefault(name, set()).add(module.split(".")[0] if module.startswith(
                ("schemas", "infra", "sonae")) else ".".join(module.split(".")[:2]))
    assert {name: sorted(p) for name, p in where.items() if len(p) > 1} == {}
