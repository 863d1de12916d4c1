"""Clear the outputs of notebooks before committing them (tests/test_notebooks.py checks it).

    python scripts/clear-notebooks.py notebooks/*.ipynb
"""

import sys

import nbformat

for path in sys.argv[1:]:
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nbformat.write(nb, path)
