"""The cache as people read it: graph folders named <backend>-<ops>-<key>, the root index.json and
README.md after two processes shared the cache, each graph's link to its library, the
`lazytriton cache list|show|stats|clear` command line on a real run's cache, LAZYTRITON_LOGS
(output_code, recompiles), and kernels.json's origins (the ops a kernel computes).

Runs once per backend (conftest.py): the training subprocesses also check their parameters
against eager."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

import lazytriton
from lazytriton import cli, logs
from lazytriton.runtime import cache_index
from lazytriton.runtime.disk_cache import content_key

pytestmark = pytest.mark.differential  # once per backend (conftest.py)

HERE = Path(__file__).resolve().parent
NAME = re.compile(r"^(aten|cpp|triton)-[A-Za-z0-9_]+-[0-9a-f]{24}$")
NO_KERNELS = "the reference executor runs the IR node by node: no kernels, no origins"


def _env(**extra) -> dict:
    env = dict(os.environ, LAZYTRITON_STRICT="1", **extra)
    env.pop("LAZYTRITON_CACHE_DIR", None)
    return env


@pytest.fixture(scope="module")
def two_runs(test_backend, tmp_path_factory):
    """Two processes training different models at once into one fresh cache dir, with every
    LAZYTRITON_LOGS topic on: (cache dir, their JSON results, their stderr)."""
    cache = tmp_path_factory.mktemp(f"shared-cache-{test_backend}")
    procs = [subprocess.Popen(
        [sys.executable, str(HERE / "small_training.py"), "--backend", test_backend,
         "--cache-dir", str(cache), "--hidden", str(hidden)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=_env(LAZYTRITON_LOGS="output_code,recompiles")) for hidden in (16, 24)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    return cache, [json.loads(out.splitlines()[-1]) for out, _ in outs], [e for _, e in outs]


def _cli(capsys, *argv) -> str:
    assert cli.main(list(argv)) == 0
    return capsys.readouterr().out


# --- a real run's cache ---------------------------------------------------------------------------

def test_two_processes_train_like_eager_and_both_reach_the_index(two_runs, test_backend):
    cache, results, _ = two_runs
    for result in results:
        assert result["max_diff"] < 1e-4, result
        assert result["counters"]["UncachedCompile"] >= 2  # step 1 (momentum buffers), then 2+
    folders = {f.name for f in cache_index.graph_folders(cache)}
    index = json.loads((cache / "index.json").read_text())["graphs"]
    assert set(index) == folders and len(folders) >= 4  # no process's update was lost
    for name, entry in index.items():
        assert entry["backend"] == test_backend and entry["ops"] > 0
        assert entry["compile_s"] > 0 and entry["last_used"] and not entry["fallback"]
        assert entry["kernels"] > 0 if test_backend != "aten" else entry["kernels"] == 0
    readme = (cache / "README.md").read_text()
    assert all(f"`{name}`" in readme for name in folders)
    assert "graphs/<backend>-<ops>-<key>/" in readme and "kernels/cpp/<key[:2]>/<key>/" in readme


def test_graph_folders_are_named_backend_ops_key(two_runs, test_backend):
    cache, _, _ = two_runs
    for folder in cache_index.graph_folders(cache):
        assert NAME.match(folder.name), folder.name
        record = cache_index.read_record(folder)
        # the key is the content address: recomputed from the IR, it names the same folder
        key = content_key(test_backend, (folder / "ir.txt").read_text())
        assert cache_index.key_of(folder) == record["key"] == key
        assert folder.name == f"{test_backend}-{record['description']}-{key}"
        assert cache_index.find_graph(cache, key[:8]) == folder
    descriptions = {cache_index.read_record(f)["description"]
                    for f in cache_index.graph_folders(cache)}
    assert any(d.startswith("addmm_relu") for d in descriptions), descriptions  # Linear, ReLU


def test_each_graph_folder_leads_to_its_built_code(two_runs, test_backend):
    cache, _, _ = two_runs
    for folder in cache_index.graph_folders(cache):
        record = cache_index.read_record(folder)
        kernels = cache_index.kernel_entries(folder)
        if test_backend == "aten":
            assert not kernels and "library" not in record
            continue
        for k in kernels:  # every kernel's source, and where in it the kernel starts
            lines = (folder / k["source"]).read_text().splitlines()
            assert k["line"] > 0 and k["kernel"] in lines[k["line"] - 1]
        if test_backend == "cpp":  # the record names the library; the link leads to it
            library = cache / record["library"]
            assert library.name == "kernels.so" and library.is_file()
            assert (folder / "library").resolve() == library.parent.resolve()
            assert (folder / "library" / "kernels.cpp").read_text() == \
                (folder / "kernels.cpp").read_text()
            assert library.parent.parent.parent == cache / "kernels" / "cpp"


def test_the_bias_gradient_column_sum_lists_only_the_sum(two_runs, test_backend):
    if test_backend == "aten":
        pytest.skip(NO_KERNELS)
    cache, _, _ = two_runs
    kernels = [k for f in cache_index.graph_folders(cache) for k in cache_index.kernel_entries(f)]
    backward = [k for k in kernels if "nll_loss_backward.default" in k["fused_ops"]]
    assert backward, "no kernel computes the loss gradient"
    bias_sizes = (["1", "5"], ["1", "16"], ["1", "24"])  # sums over the batch, per column
    with_sums = [(k, m) for k in kernels for m in k["members"]
                 if m["reduction"] == "sum" and m["sizes"] in bias_sizes]
    assert with_sums, "no kernel computes a bias gradient"
    for k, m in with_sums:
        assert "sum.dim_IntList" in k["fused_ops"]
        if m["over_outer_loop"]:  # C++: summed in the kernel over the rows it sums
            assert {"threshold_backward.default", "nll_loss_backward.default"} & \
                set(k["fused_ops"]), k["fused_ops"]
        else:  # summing a buffer other kernels computed lists none of their ops
            assert not {"threshold_backward.default", "nll_loss_backward.default"} & \
                set(k["fused_ops"]), k["fused_ops"]
    if test_backend == "cpp":
        assert all(m["over_outer_loop"] for _, m in with_sums)


def test_cli_list_show_and_stats_read_the_run(two_runs, test_backend, capsys):
    cache, _, _ = two_runs
    folders = cache_index.graph_folders(cache)
    listing = _cli(capsys, "cache", "list", "--dir", str(cache))
    assert listing.splitlines()[0].split() == ["LAST", "USE", "(UTC)", "OPS", "KERNELS",
                                               "COMPILE", "GRAPH"]
    for folder in folders:
        (row,) = [line for line in listing.splitlines() if line.endswith(folder.name)]
        assert f" {cache_index.read_record(folder)['ops']} " in row
    assert f"{len(folders)} graphs in {cache / 'graphs'}" in listing
    assert _cli(capsys, "cache", "list", "--dir", str(cache), "--backend", "nope").startswith(
        "no graphs")

    folder = max(folders, key=lambda f: cache_index.read_record(f)["ops"])  # a training step
    shown = _cli(capsys, "cache", "show", "--dir", str(cache), cache_index.key_of(folder)[:10])
    assert shown.startswith(f"graph     {folder.name}\nfolder    {folder}\n")
    for k in cache_index.kernel_entries(folder):
        assert f"  {k['kernel']}  {k['source']}:{k['line']}  " in shown
        assert "      fuses " + ", ".join(op.split(".")[0] for op in k["fused_ops"]) in shown
    if test_backend == "aten":
        assert "no kernels: the reference executor (aten) runs ir.txt node by node" in shown
    if test_backend == "cpp":
        assert f"library   {cache / cache_index.read_record(folder)['library']}" in shown

    stats = _cli(capsys, "cache", "stats", "--dir", str(cache))
    assert f"graphs     {len(folders)}: {test_backend} {len(folders)}\n" in stats
    assert "index      lists" in stats and "up to date" in stats
    libraries = len(list((cache / "kernels" / "cpp").glob("??/*/kernels.so")))
    assert f"C++ libs   {libraries} in kernels/cpp/" in stats


def test_the_command_line_runs_as_a_module_and_a_console_script(two_runs):
    cache, _, _ = two_runs
    name = cache_index.graph_folders(cache)[0].name
    as_module = subprocess.run([sys.executable, "-m", "lazytriton", "cache", "show", "--dir",
                                str(cache), name], capture_output=True, text=True, env=_env())
    assert as_module.returncode == 0 and f"graph     {name}" in as_module.stdout, as_module.stderr
    script = shutil.which("lazytriton", path=str(Path(sys.executable).parent))
    assert script, "pip install -e . installs the lazytriton console script next to python"
    listed = subprocess.run([script, "cache", "list", "--dir", str(cache)],
                            capture_output=True, text=True, env=_env())
    assert listed.returncode == 0 and name in listed.stdout, listed.stderr
    missing = subprocess.run([script, "cache", "show", "--dir", str(cache), "0" * 24],
                             capture_output=True, text=True, env=_env())
    assert missing.returncode == 1 and "no graph '000000000000000000000000'" in missing.stderr


def test_help_texts_name_every_action(capsys):
    with pytest.raises(SystemExit):
        cli.main(["cache", "--help"])
    text = capsys.readouterr().out
    for action in ("list", "show", "stats", "clear"):
        assert re.search(rf"^\s+{action}\s+\S", text, re.M), text
    with pytest.raises(SystemExit):
        cli.main(["cache", "clear", "--help"])
    assert "waits until no process is compiling" in capsys.readouterr().out
    assert cli.main([]) == 2 and "COMMAND" in capsys.readouterr().out
    assert cli.main(["cache"]) == 2 and "ACTION" in capsys.readouterr().out


def test_output_code_prints_each_new_graphs_kernel_files(two_runs, test_backend):
    cache, results, errs = two_runs
    for result, err in zip(results, errs):
        blocks = [b for b in err.split("[lazytriton ") if b.startswith("output_code]")]
        assert len(blocks) == result["counters"]["UncachedCompile"]
        for block in blocks:
            folder = Path(re.search(r"\n  folder   (\S+)", block)[1])
            assert folder.parent == cache / "graphs" and folder.is_dir()
            places = re.findall(r"\n  (\S+) +(\S+):(\d+) +\S", block)
            if test_backend == "aten":
                assert "no kernels: the reference executor runs ir.txt" in block and not places
            else:
                assert len(places) == len(cache_index.kernel_entries(folder)) > 0
                assert all((folder / source).is_file() for _, source, _ in places)


def test_recompiles_explains_the_training_runs_second_graph(two_runs):
    _, results, errs = two_runs
    for err in errs:
        messages = re.findall(r"\[lazytriton recompiles\] (.*)", err)
        assert messages and all("the nearest graph compiled before is" in m and
                                "they differ first at %" in m for m in messages), err


# --- in this process --------------------------------------------------------------------------------

@pytest.fixture
def own_cache(test_backend, tmp_path):
    lazytriton.init(test_backend, cache_dir=tmp_path / "cache")
    return tmp_path / "cache"


def _log_lines(capfd, topic: str) -> list[str]:
    return re.findall(rf"\[lazytriton {topic}\] (.*)", capfd.readouterr().err)


def test_recompiles_names_the_input_shape_or_op_that_differs(own_cache, monkeypatch, capfd):
    monkeypatch.setenv("LAZYTRITON_LOGS", "recompiles")
    x = torch.randn(8, 10)
    torch.testing.assert_close((x.to("lazy") * 2).sum(1).cpu(), (x * 2).sum(1))
    assert _log_lines(capfd, "recompiles") == []  # the first graph: nothing to compare with
    torch.testing.assert_close((x[:4].to("lazy") * 2).sum(1).cpu(), (x[:4] * 2).sum(1))
    (line,) = _log_lines(capfd, "recompiles")
    assert "differ first at %0 (input): shape/dtype float32[4, 10] here, float32[8, 10] there" \
        in line
    torch.testing.assert_close((x.to("lazy") * 2).cos().cpu(), (x * 2).cos())
    (line,) = _log_lines(capfd, "recompiles")
    assert re.search(r"differ first at %\d+: op cos.default here, sum.dim_IntList there", line)


def test_recompiles_names_a_failed_guard(own_cache, test_backend, monkeypatch, capfd):
    if test_backend == "aten":
        pytest.skip("the reference executor specializes no scalar: it has no guards")
    monkeypatch.setenv("LAZYTRITON_LOGS", "recompiles")
    x = torch.randn(6, 9)
    for correction in (1, 0):  # var's decomposition computes with it: the code assumes it
        torch.testing.assert_close(x.to("lazy").var(1, correction=correction).cpu(),
                                   x.var(1, correction=correction))
    (line,) = _log_lines(capfd, "recompiles")
    assert "same ops and shapes as a graph compiled before" in line
    assert re.search(r"scalar input %\d+ was 1 and is 0", line), line


def test_logs_take_a_comma_separated_list_and_warn_of_unknown_topics(own_cache, test_backend,
                                                                     monkeypatch, capfd):
    unknown = f"no_such_topic_{test_backend}"  # warned once per process and value
    monkeypatch.setenv("LAZYTRITON_LOGS", f" output_code , {unknown}")
    with pytest.warns(RuntimeWarning, match=f"unknown topic {unknown}; the topics are "
                                            "output_code, recompiles, autotune and all"):
        torch.testing.assert_close(torch.ones(3).to("lazy").add(2).cpu(), torch.full((3,), 3.))
    assert len(_log_lines(capfd, "output_code")) == 1
    assert logs.enabled("output_code") and not logs.enabled("recompiles")
    monkeypatch.setenv("LAZYTRITON_LOGS", "all")
    assert logs.enabled("output_code") and logs.enabled("recompiles")


@pytest.mark.skip_backends(aten=NO_KERNELS)
def test_origins_are_the_ops_a_kernel_computes(own_cache):
    x, w = torch.randn(8, 10), torch.randn(10, 3)
    lx = x.to("lazy")
    p = (lx * 2).softmax(-1)  # the mul is computed inside the softmax's kernel
    q = p @ w.to("lazy")      # an extern reads p: p is a buffer before the column sum reads it
    s = p[::2].sum(0)         # a column sum of that buffer: it computes a sum, nothing else
    for got, want in zip(lazytriton.to_cpu([p, q, s]),   # (over other rows than p's kernel)
                         [(x * 2).softmax(-1), (x * 2).softmax(-1) @ w,
                          (x * 2).softmax(-1)[::2].sum(0)]):
        torch.testing.assert_close(got, want)
    (folder,) = cache_index.graph_folders(own_cache)
    kernels = {tuple(k["fused_ops"]) for k in cache_index.kernel_entries(folder)}
    assert kernels == {("_softmax.default", "amax.default", "div.Tensor", "exp.default",
                        "mul.Tensor", "sub.Tensor", "sum.dim_IntList"),
                       ("sum.dim_IntList",)}, kernels


# --- sharing and clearing -------------------------------------------------------------------------

def test_clear_waits_for_a_compile_in_flight_then_empties_the_cache(own_cache, capsys):
    x = torch.randn(5)
    torch.testing.assert_close(x.to("lazy").exp().cpu(), x.exp())
    assert cache_index.graph_folders(own_cache)
    finished = threading.Event()

    def clear():
        cli.main(["cache", "clear", "--dir", str(own_cache)])
        finished.set()
    with cache_index.compiling(own_cache):  # as another process's compile holds it
        worker = threading.Thread(target=clear)
        worker.start()
        assert not finished.wait(0.5)  # waits for the compile
        assert cache_index.graph_folders(own_cache)
    worker.join(60)
    assert finished.is_set()
    assert re.match(r"removed 1 graph and \d+ C\+\+ librar(y|ies) \(.*\) from ",
                    capsys.readouterr().out)
    assert not cache_index.graph_folders(own_cache) and not (own_cache / "kernels").exists()
    assert not (own_cache / "index.json").exists()
    assert not [p for p in own_cache.iterdir() if p.name.startswith(".trash")]


def test_a_session_keeps_working_across_a_clear(own_cache, capsys):
    x = torch.randn(6, 4)
    torch.testing.assert_close(x.to("lazy").sin().cpu(), x.sin())
    _cli(capsys, "cache", "clear", "--dir", str(own_cache))
    torch.testing.assert_close(x.to("lazy").sin().cpu(), x.sin())  # the loaded program
    torch.testing.assert_close(x.to("lazy").tanh().cpu(), x.tanh())  # a new graph: compiled
    cache_index.index_writer(own_cache).flush()
    (folder,) = cache_index.graph_folders(own_cache)
    assert "tanh" in folder.name
    assert list(json.loads((own_cache / "index.json").read_text())["graphs"]) == [folder.name]


def test_readers_tolerate_a_missing_or_torn_index(own_cache, capsys):
    x = torch.randn(3, 3)
    torch.testing.assert_close(x.to("lazy").neg().cpu(), -x)
    cache_index.index_writer(own_cache).flush()
    (own_cache / "index.json").write_text('{"graphs": {"cut off')  # as a crashed writer would
    (first,) = cache_index.graph_folders(own_cache)
    assert first.name in _cli(capsys, "cache", "list", "--dir", str(own_cache))
    assert "missing or unreadable" in _cli(capsys, "cache", "stats", "--dir", str(own_cache))
    torch.testing.assert_close(x.to("lazy").abs().cpu(), x.abs())
    cache_index.index_writer(own_cache).flush()  # rebuilt from the folders, then merged
    index = json.loads((own_cache / "index.json").read_text())["graphs"]
    assert set(index) == {f.name for f in cache_index.graph_folders(own_cache)} and len(index) == 2


def _merge_many(cache: str, worker: int, count: int) -> None:
    for i in range(count):
        name = f"aten-w{worker}_{i}-{worker:012d}{i:012d}"
        (Path(cache) / "graphs" / name).mkdir(parents=True)
        cache_index.merge_into_index(Path(cache), {name: {"backend": "aten", "ops": i}})


def test_concurrent_index_merges_lose_no_update(tmp_path):
    import multiprocessing
    ctx = multiprocessing.get_context("fork")  # plain file work in the children: fork is safe
    workers = [ctx.Process(target=_merge_many, args=(str(tmp_path), w, 25)) for w in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
        assert w.exitcode == 0
    index = cache_index.read_index(tmp_path)
    assert len(index) == 100 and set(index) == {f.name for f in cache_index.graph_folders(tmp_path)}
    assert all("ops" in entry for entry in index.values())  # each merge's own record, kept
    assert len(list(tmp_path.glob(".*.tmp"))) == 0  # every write finished by a rename


def test_folders_from_before_names_are_still_listed_and_shown(tmp_path, capsys):
    key = "0123456789abcdef01234567"
    legacy = tmp_path / "graphs" / key  # a bare key, with the old record's fields
    legacy.mkdir(parents=True)
    (legacy / "ir.txt").write_text("%0 = data : float32[3]\nreturn %0\n")
    (legacy / "index.json").write_text(json.dumps({"backend": "aten", "nodes": 1, "inputs": 1,
                                                   "outputs": ["float32[3]"]}))
    assert key in _cli(capsys, "cache", "list", "--dir", str(tmp_path))
    shown = _cli(capsys, "cache", "show", "--dir", str(tmp_path), key[:6])
    assert shown.startswith(f"graph     {key}\n") and "outputs float32[3]" in shown
