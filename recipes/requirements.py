# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""The requirements of `pyproject.toml` as pip lines, for the set-up scripts (standard library only).

    python recipes/requirements.py --extras dev,vision                     # the ranges library users get
    python recipes/requirements.py --extras gguf --lift transformers,trl   # the same with those upper bounds lifted
    python recipes/requirements.py --above-bounds "transformers==5.25.0 trl==1.16.0"   # which pins leave the ranges

`recipes/setup_env.sh` installs from a lock (`recipes/locks/`); this script is what it resolves from instead when
the lock is being rebuilt (`recipes/update_locks.sh`) or the newest versions are being tried
(`tests/run_tests.sh --latest`).
"""

import argparse
import re
import sys
import tomllib
from pathlib import Path


PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
# `name`, then the version specifiers, then an optional environment marker
_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*([^;]*?)\s*(;.*)?$")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def split(requirement: str) -> tuple[str, str, str, str]:
    """`(name, extras, specifiers, marker)` of a PEP 508 requirement without a URL."""
    match = _REQUIREMENT.match(requirement)
    if match is None:
        raise ValueError(f"{PYPROJECT}: cannot parse the requirement {requirement!r}")
    name, extras, specifiers, marker = match.groups()
    return name, extras or "", specifiers, marker or ""


def requirements(extras: list[str], lift: set[str]) -> list[str]:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    optional = project.get("optional-dependencies", {})
    unknown = [e for e in extras if e not in optional]
    if unknown:
        raise SystemExit(f"{PYPROJECT}: no optional-dependencies {unknown}; known: {sorted(optional)}")
    lines = list(project["dependencies"]) + [r for e in extras for r in optional[e]]
    out, seen = [], set()
    for line in lines:
        name, extra, specifiers, marker = split(line)
        if canonical(name) in lift:
            specifiers = ",".join(s for s in specifiers.split(",") if s.strip() and not s.strip().startswith("<"))
        text = f"{name}{extra}{specifiers}{' ' + marker if marker else ''}"
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


def upper_bounds() -> dict[str, str]:
    """`{package: specifiers}` for every requirement of `pyproject.toml` with an upper bound."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    lines = list(project["dependencies"]) + [r for rs in project.get("optional-dependencies", {}).values() for r in rs]
    out = {}
    for line in lines:
        name, _, specifiers, _ = split(line)
        if "<" in specifiers:
            out[canonical(name)] = specifiers
    return out


def _version_tuple(version: str) -> tuple:
    return tuple(int(p) if p.isdigit() else 0 for p in re.split(r"[.+]", version)[:3])


def above_bounds(pins: str) -> list[str]:
    """The `name==version` pins of `pins` that `pyproject.toml`'s upper bounds exclude, as `name version (bound)`."""
    bounds, out = upper_bounds(), []
    for pin in pins.split():
        if "==" not in pin:
            continue
        name, version = pin.split("==", 1)
        spec = bounds.get(canonical(name))
        if spec is None:
            continue
        for part in spec.split(","):
            part = part.strip()
            op, bound = ("<=", part[2:]) if part.startswith("<=") else ("<", part[1:]) if part.startswith("<") else ("", "")
            if not op:
                continue
            v, b = _version_tuple(version), _version_tuple(bound)
            if (op == "<" and v >= b) or (op == "<=" and v > b):
                out.append(f"{name} {version} (pyproject: {spec})")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--extras", default="", help="comma-separated optional-dependency groups")
    parser.add_argument("--lift", default="", help="comma-separated packages whose upper bound is dropped")
    parser.add_argument("--above-bounds", dest="above", default=None, help="space-separated name==version pins")
    args = parser.parse_args()
    if args.above is not None:
        print("\n".join(above_bounds(args.above)))
        return
    extras = [e for e in args.extras.split(",") if e]
    lift = {canonical(p) for p in args.lift.split(",") if p}
    sys.stdout.write("\n".join(requirements(extras, lift)) + "\n")


if __name__ == "__main__":
    main()
