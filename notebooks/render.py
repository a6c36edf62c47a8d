"""Execute the example notebooks and write copies with their outputs into notebooks/rendered/ (ignored by git).

    python notebooks/render.py                  # every notebook, with its default parameters (the real IDC)
    python notebooks/render.py --local          # against a local Orthanc + fixture tables, as the tests do
    python notebooks/render.py 02 --local --html  # one notebook; also HTML (needs nbconvert)

Needs the test extra (``pip install -e '.[test]'``: nbclient, ipykernel); ``--local`` also needs Orthanc
(tests/install-orthanc.sh) and a clone of the repository (it uses tests/support); ``--html`` needs
``pip install nbconvert``. The notebooks in git carry no outputs (tests/test_notebook.py checks that);
each has one cell tagged ``parameters`` whose values ``--local`` (and the tests) override in a cell
inserted after it, as papermill does.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
RENDERED = HERE / "rendered"
TIMEOUT = 600


def notebooks(names: list[str] | None = None) -> list[Path]:
    """The notebooks in notebooks/ (those whose file name starts with one of ``names``)."""
    paths = sorted(HERE.glob("[0-9]*.ipynb"))
    if names:
        paths = [p for p in paths if any(p.name.startswith(n) for n in names)]
    return paths


def parameters_cell(nb) -> int:
    """The index of the one code cell tagged ``parameters``."""
    found = [i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(found) != 1:
        raise ValueError(f"a notebook needs exactly one cell tagged 'parameters', found {len(found)}")
    return found[0]


def defined_names(source: str) -> list[str]:
    """Names assigned at the top level of a cell."""
    import ast

    names = []
    for node in ast.parse(source).body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                if isinstance(target, ast.Name):
                    names.append(target.id)
    return names


def inject_parameters(nb, values: Mapping[str, object]):
    """Insert, after the parameters cell, a cell assigning those of ``values`` that the notebook defines."""
    at = parameters_cell(nb)
    names = defined_names(nb.cells[at].source)
    given = {k: v for k, v in values.items() if k in names}
    if given:
        source = "# injected parameters\n" + "".join(f"{k} = {v!r}\n" for k, v in given.items())
        cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
        nb.cells.insert(at + 1, cell)
    return nb


def execute(path: Path, cwd: Path, values: Mapping[str, object] | None = None, timeout: int = TIMEOUT,
            keep_failed: Path | None = None):
    """Run the notebook at ``path`` top to bottom in a fresh kernel with ``cwd`` as working directory.

    A failing cell raises nbclient's CellExecutionError (naming the cell, with its traceback); with
    ``keep_failed`` the notebook is first written there as far as it ran, error included.
    """
    import nbclient

    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    inject_parameters(nb, values or {})
    client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                     resources={"metadata": {"path": str(cwd)}})
    try:
        client.execute()
    except Exception:
        if keep_failed is not None:
            keep_failed.parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, keep_failed)
        raise
    return nb


def write_rendered(nb, name: str, html: bool) -> list[Path]:
    RENDERED.mkdir(exist_ok=True)
    out = [RENDERED / name]
    nbformat.write(nb, out[0])
    if html:
        from nbconvert import HTMLExporter

        body, _ = HTMLExporter().from_notebook_node(nb)
        out.append(out[0].with_suffix(".html"))
        out[-1].write_text(body)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="notebooks whose file name starts with these (default: all)")
    parser.add_argument("--local", action="store_true", help="run against a local Orthanc and fixture tables")
    parser.add_argument("--html", action="store_true", help="also write HTML (needs nbconvert)")
    args = parser.parse_args(argv)
    paths = notebooks(args.names)
    if not paths:
        parser.error(f"no notebook in {HERE} starts with {args.names}")
    with tempfile.TemporaryDirectory(prefix="cohort-notebooks-") as tmp:
        work = Path(tmp)
        if args.local:
            sys.path[:0] = [str(HERE.parent), str(HERE.parent / "tests")]
            from cohort import Catalog
            from tests.support.notebooks import local_idc

            with local_idc(work / "local", Catalog(download=False)) as local:
                for path in paths:
                    nb = execute(path, work, local.parameters, keep_failed=RENDERED / path.name)
                    print(*write_rendered(nb, path.name, args.html))
        else:
            for path in paths:
                print(*write_rendered(execute(path, work, keep_failed=RENDERED / path.name), path.name, args.html))
    return 0


if __name__ == "__main__":
    sys.exit(main())
