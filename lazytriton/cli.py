"""`lazytriton` (or `python -m lazytriton`): look into the cache dir.

    lazytriton cache list [--backend NAME]   every graph: ops, kernels, compile time, last use
    lazytriton cache show KEY                one graph: its kernels, the ops each fuses, files
    lazytriton cache stats                   counts and sizes
    lazytriton cache clear                   empty it (safe while other processes use it)

It reads the graph folders themselves (cache_index.scan), so a missing or stale root index.json
never hides a graph.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from .runtime import cache_index
from .runtime.disk_cache import default_cache_dir

DIR_HELP = ("the cache dir (default: $LAZYTRITON_CACHE_DIR, else $XDG_CACHE_HOME/lazytriton, "
            "i.e. ~/.cache/lazytriton)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lazytriton", description="lazytriton's command line: look into the cache dir.")
    parser.set_defaults(print_help=parser.print_help)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    cache = commands.add_parser(
        "cache", help="list, show, count or clear the compiled graphs in the cache dir",
        description="The compiled graphs in lazytriton's cache dir: one folder per graph, "
                    "graphs/<backend>-<ops>-<key>/ (its IR, generated kernels and record), and "
                    "the built C++ libraries in kernels/cpp/.")
    cache.set_defaults(print_help=cache.print_help)
    actions = cache.add_subparsers(dest="action", metavar="ACTION")
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--dir", type=Path, default=None, help=DIR_HELP)

    listing = actions.add_parser(
        "list", parents=[where], help="every graph: ops, kernels, compile time, last use",
        description="One line per graph, most recently used first: when it was last compiled "
                    "or loaded by a process, its op count, kernel count and compile time, and "
                    "its folder's name (<backend>-<ops>-<key>).")
    listing.add_argument("--backend", help="only graphs of this backend (aten, cpp, triton)")
    show = actions.add_parser(
        "show", parents=[where], help="one graph: its kernels, the ops each fuses, its files",
        description="One graph: its record, its files, and per kernel the source file and line "
                    "where it starts, its loops and the aten ops it computes.")
    show.add_argument("key", metavar="KEY",
                      help="the graph's key, its first characters, or its folder's name")
    actions.add_parser(
        "stats", parents=[where], help="graph, kernel and library counts, compile time, sizes",
        description="How many graphs per backend, their ops and kernels, total compile time, "
                    "the built C++ libraries and the disk space each part takes.")
    actions.add_parser(
        "clear", parents=[where], help="delete every graph and built library",
        description="Delete every graph folder, built library and the root index. Safe while "
                    "other processes use the cache: it waits until no process is compiling a "
                    "graph, moves the folders aside in one rename each, then deletes them. "
                    "Running processes keep the kernels they have loaded and compile afresh "
                    "any graph they have not seen.")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command != "cache" or not args.action:
        args.print_help()  # of `lazytriton` or of `lazytriton cache`
        return 2
    cache_dir = args.dir if args.dir is not None else default_cache_dir()
    run = {"list": cmd_list, "show": cmd_show, "stats": cmd_stats, "clear": cmd_clear}
    try:
        run[args.action](cache_dir, args)
    except LookupError as e:
        print(f"lazytriton: {e.args[0]}", file=sys.stderr)
        return 1
    return 0


# --- list ---------------------------------------------------------------------------------------

def cmd_list(cache_dir: Path, args) -> None:
    records = [r for r in cache_index.scan(cache_dir)
               if not args.backend or r.get("backend") == args.backend]
    records.sort(key=lambda r: r.get("last_used") or r.get("created") or "", reverse=True)
    if not records:
        print(f"no graphs in {cache_dir}")
        return
    rows = [("LAST USE (UTC)", "OPS", "KERNELS", "COMPILE", "GRAPH")]
    rows += [(_when(r.get("last_used") or r.get("created")), str(r.get("ops", "?")),
              _kernels(r), _seconds(r.get("compile_s")), r["name"]) for r in records]
    print(_table(rows, right={1, 2, 3}))
    print(f"{_count(len(records), 'graph')} in {cache_dir / cache_index.GRAPHS}")


def _kernels(record: dict) -> str:
    if record.get("fallback"):
        return "fallback"
    if record.get("backend") == "aten":
        return "-"
    return str(record.get("kernels", "?"))


# --- show ---------------------------------------------------------------------------------------

def cmd_show(cache_dir: Path, args) -> None:
    folder = cache_index.find_graph(cache_dir, args.key)
    r = cache_index.read_record(folder)
    outputs = ", ".join(r.get("outputs", [])[:6]) + (" ..." if len(r.get("outputs", [])) > 6
                                                     else "")
    top = ", ".join(f"{op} x{n}" for op, n in r.get("top_ops", []))
    info = [("graph", r["name"]), ("folder", str(folder)),
            ("backend", f"{r.get('backend', '?')}: {r.get('ops', '?')} ops, "
                        f"{r.get('inputs', '?')} inputs, outputs {outputs or '?'}"),
            ("top ops", top or "?"),
            ("compiled", f"in {_seconds(r.get('compile_s'))}; created {r.get('created', '?')},"
                         f" last used {r.get('last_used', '?')}")]
    if r.get("library"):
        info.append(("library", str(cache_dir / r["library"]) + "  (link: library/)"))
    info.append(("files", "  ".join(sorted(p.name for p in folder.iterdir()
                                           if not p.name.startswith(".")))))
    print("\n".join(f"{k:<9} {v}" for k, v in info))
    kernels = cache_index.kernel_entries(folder)
    print()
    if r.get("fallback"):
        print("code generation failed for this graph: it ran on the reference executor")
    if not kernels:
        print("no kernels: " + ("the reference executor (aten) runs ir.txt node by node"
                                if r.get("backend") == "aten" else "see wrapper.py"))
        return
    print(f"{_count(len(kernels), 'kernel')}, in the order wrapper.py calls them:")
    for k in kernels:
        print(f"  {k.get('kernel')}  {k.get('source')}:{k.get('line', 0)}  {_loops(k)}")
        ops = ", ".join(op.split(".")[0] for op in k.get("fused_ops", [])) or "copy"
        print(f"      fuses {ops}")


def _loops(kernel: dict) -> str:
    outer = ", ".join(kernel.get("outer_loop", []))
    members = kernel.get("members", [])
    reductions = [f"{m['reduction']} ({'in a register' if m.get('in_register') else m['buffer']})"
                  for m in members if m.get("reduction")]
    stores = [m["buffer"] for m in members if not m.get("reduction")]
    text = f"parallel over [{outer}]" if outer else "one loop nest"
    if reductions:
        text += "; reduces: " + ", ".join(reductions)
    if stores:
        text += "; writes " + ", ".join(stores)
    return text


# --- stats --------------------------------------------------------------------------------------

def cmd_stats(cache_dir: Path, args) -> None:
    records = cache_index.scan(cache_dir)
    backends = Counter(r.get("backend", "?") for r in records)
    fallbacks = sum(bool(r.get("fallback")) for r in records)
    libraries = sorted((cache_dir / "kernels" / "cpp").glob("??/*/entry.json"))
    failed = sorted((cache_dir / "kernels" / "cpp" / "failed").glob("*.cpp"))
    triton = cache_dir / "kernels" / "triton"
    indexed = cache_index.read_index(cache_dir)
    names = {r["name"] for r in records}
    if indexed is None:
        index = "missing or unreadable (rebuilt from the folders at the next compile)"
    elif names - set(indexed):
        index = (f"lists {_count(len(indexed), 'graph')}, {len(names - set(indexed))} newer not "
                 "yet in it")
    else:
        index = f"lists {_count(len(indexed), 'graph')}, up to date"
    rows = [
        ("cache dir", f"{cache_dir} ({_size(cache_index.disk_usage(cache_dir))})"),
        ("graphs", f"{len(records)}" + (": " + ", ".join(f"{b} {n}" for b, n in
                                                         sorted(backends.items()))
                                        if records else "")
         + (f"; {fallbacks} ran on the reference executor (FallbackGraph)" if fallbacks else "")),
        ("ops", str(sum(r.get("ops", 0) or 0 for r in records))),
        ("kernels", str(sum(r.get("kernels", 0) or 0 for r in records))),
        ("compile", f"{sum(r.get('compile_s', 0) or 0 for r in records):.2f} s "
                    "(each graph's last compile)"),
        ("graphs/", _size(cache_index.disk_usage(cache_dir / cache_index.GRAPHS))),
        ("C++ libs", f"{len(libraries)} in kernels/cpp/ "
                     f"({_size(cache_index.disk_usage(cache_dir / 'kernels' / 'cpp'))})"
         + (f"; {len(failed)} failed builds kept in kernels/cpp/failed/" if failed else "")),
        ("Triton", f"kernels/triton/ ({_size(cache_index.disk_usage(triton))})"
         if triton.exists() else "kernels/triton/ absent (Triton's cache, used on a GPU)"),
        ("index", index)]
    print("\n".join(f"{k:<10} {v}" for k, v in rows))


# --- clear --------------------------------------------------------------------------------------

def cmd_clear(cache_dir: Path, args) -> None:
    removed = cache_index.clear(cache_dir)
    print(f"removed {_count(removed['graphs'], 'graph')} and {removed['libraries']} C++ "
          f"{'library' if removed['libraries'] == 1 else 'libraries'} "
          f"({_size(removed['bytes'])}) from {cache_dir}")


# --- formatting ---------------------------------------------------------------------------------

def _table(rows: list[tuple[str, ...]], right: set[int]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [cell.rjust(w) if i in right else cell.ljust(w)
                 for i, (cell, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _when(iso: str | None) -> str:
    return iso.replace("T", " ")[:19] if iso else "?"


def _seconds(value) -> str:
    return "?" if value is None else f"{value:.2f} s"


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


if __name__ == "__main__":
    sys.exit(main())
