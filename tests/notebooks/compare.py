"""Run a notebook with nbclient on two kernels and print whether the outputs
a user sees are equal. Used by the Go test TestNbclientSameOutputs."""

import json
import sys

import nbformat
from nbclient import NotebookClient


def visible(nb):
    out = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for o in cell.get("outputs", []):
            t = o["output_type"]
            if t == "stream":
                out.append([i, t, o["name"], o["text"]])
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


if __name__ == "__main__":
    path, a, b = sys.argv[1:4]
    ra, rb = run(path, a), run(path, b)
    print(json.dumps({"equal": ra == rb, a: ra, b: rb}))
