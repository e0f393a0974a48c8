#!/usr/bin/env python3
"""Materialise the notebook corpus from testdata/corpus/manifest.json.

Each manifest entry names a public notebook by repository, path and commit.
This copies it out of a git mirror of that repository (MIRRORS/owner+name/repo
or MIRRORS/owner/name, a bare or normal git directory), strips its outputs
and execution counts, removes the code cells the entry's "drop" lists (by
0-based index among the code cells, each with its reason) and copies the
data files it reads next to it:

    testdata/corpus/notebooks/<name>/<name>.ipynb
    testdata/corpus/notebooks/<name>/<files...>

Usage: scripts/corpus-import.py [--mirrors DIR] [--only NAME ...] [--check]
--check also runs each materialised notebook once with nbclient (all-local,
errors allowed) and prints its run time and the cells that raised.
"""
import argparse, json, os, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "testdata", "corpus")


def gitdir(mirrors, repo):
    owner, name = repo.split("/")
    for d in (os.path.join(mirrors, owner + "+" + name, "repo"), os.path.join(mirrors, owner, name), os.path.join(mirrors, owner + "+" + name)):
        if os.path.isdir(d):
            return d
    sys.exit("no mirror of %s under %s" % (repo, mirrors))


def show(gd, commit, path):
    return subprocess.run(["git", "--git-dir" if os.path.isdir(os.path.join(gd, "objects")) else "-C", gd, "show", "%s:%s" % (commit, path)],
                          check=True, capture_output=True).stdout


def strip(nb, drop):
    cells, code_i = [], 0
    for c in nb["cells"]:
        if c.get("cell_type") == "code":
            i = code_i
            code_i += 1
            if str(i) in drop:
                continue
            c["outputs"] = []
            c["execution_count"] = None
            c["metadata"] = {k: v for k, v in c.get("metadata", {}).items() if k in ("tags",)}
        else:
            c.pop("attachments", None) if c.get("cell_type") == "raw" else None
        c.pop("id", None)
        cells.append(c)
    nb["cells"] = cells
    md = nb.get("metadata", {})
    nb["metadata"] = {k: md[k] for k in ("kernelspec", "language_info") if k in md}
    nb["metadata"]["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb["nbformat"], nb["nbformat_minor"] = 4, max(nb.get("nbformat_minor", 4), 4) if nb.get("nbformat") == 4 else 4
    return nb


def check(path):
    import nbformat
    from nbclient import NotebookClient
    nb = nbformat.read(path, as_version=4)
    t = time.time()
    try:
        NotebookClient(nb, timeout=120, allow_errors=True, resources={"metadata": {"path": os.path.dirname(path)}}).execute()
    except Exception as e:  # a timeout or a dead kernel
        return time.time() - t, ["RUN FAILED: %r" % e]
    errs = []
    for i, c in enumerate([c for c in nb.cells if c.cell_type == "code"]):
        for o in c.get("outputs", []):
            if o.get("output_type") == "error":
                errs.append("cell %d %s: %s" % (i, o["ename"], o["evalue"][:100]))
    return time.time() - t, errs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mirrors", default=os.environ.get("FERRY_CORPUS_MIRRORS", "/work/.mirror"))
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--check", action="store_true")
    a = ap.parse_args()
    with open(os.path.join(CORPUS, "manifest.json")) as f:
        manifest = json.load(f)
    for e in manifest["notebooks"]:
        if a.only and e["name"] not in a.only:
            continue
        gd = gitdir(a.mirrors, e["repo"])
        nb = strip(json.loads(show(gd, e["commit"], e["path"])), e.get("drop", {}))
        out = os.path.join(CORPUS, "notebooks", e["name"])
        os.makedirs(out, exist_ok=True)
        p = os.path.join(out, e["name"] + ".ipynb")
        with open(p, "w") as f:
            json.dump(nb, f, indent=1, ensure_ascii=False)
            f.write("\n")
        for src, dst in e.get("files", {}).items():
            d = os.path.join(out, dst)
            os.makedirs(os.path.dirname(d), exist_ok=True)
            with open(d, "wb") as f:
                f.write(show(gd, e["commit"], src))
        if a.check:
            secs, errs = check(p)
            print("%-45s %5.1fs %s" % (e["name"], secs, "; ".join(errs)), flush=True)
        else:
            print(e["name"])


if __name__ == "__main__":
    main()
