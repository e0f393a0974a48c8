"""Compare the outputs a user sees in notebooks, for the Go front-end tests.

    compare.py kernels NB.ipynb KERNEL_A KERNEL_B
        runs NB with nbclient on both kernels;
    compare.py files A.ipynb B.ipynb
        compares two executed notebooks.

Both print one JSON object: {"equal": bool, NAME_A: outputs, NAME_B: outputs}.
"""

import json
import sys

import nbformat
from nbclient import NotebookClient


def visible(nb):
    """What a user sees of each code cell's outputs. Consecutive stream
    outputs of one name are joined: nbclient stores each stream message as
    its own output, Jupyter front ends (and ferry run) join them, and both
    show the same text."""
    out = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for o in cell.get("outputs", []):
            t = o["output_type"]
            if t == "stream":
                text = "".join(o["text"]) if isinstance(o["text"], list) else o["text"]
                if out and out[-1][:3] == [i, t, o["name"]]:
                    out[-1][3] += text
                else:
                    out.append([i, t, o["name"], text])
            elif t in ("execute_result", "display_data"):
                out.append([i, t, sorted(o["data"].keys()), o["data"].get("text/plain")])
                if t == "execute_result":
                    out.append([i, "count", o["execution_count"]])
            elif t == "error":
                out.append([i, t, o["ename"], o["evalue"]])
        out.append([i, "execution_count", cell.get("execution_count")])
    return out


def run(path, kernel):
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, kernel_name=kernel, timeout=120, allow_errors=True).execute()
    return visible(nb)


def main(argv):
    if len(argv) == 4 and argv[0] == "kernels":
        path, a, b = argv[1:]
        ra, rb = run(path, a), run(path, b)
    elif len(argv) == 3 and argv[0] == "files":
        a, b = argv[1:]
        ra = visible(nbformat.read(a, as_version=4))
        rb = visible(nbformat.read(b, as_version=4))
    else:
        sys.exit(__doc__)
    print(json.dumps({"equal": ra == rb, a: ra, b: rb}))


if __name__ == "__main__":
    main(sys.argv[1:])
