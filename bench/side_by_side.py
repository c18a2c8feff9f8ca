#!/usr/bin/python3
"""baukit-cpp against the seed notebook's Python pipeline, on the same machine, weights and libtorch, in one run.

  /usr/bin/python3 bench/side_by_side.py [--build build] [--model DIR] [--runs 3] [--new-tokens 100]

Writes (or reuses) a random GPT-2-XL-size checkpoint, then runs in rotating order, --runs times each:
  C++      build/tools/baukit-lens --timings (the lens and the delta lens, the page)
  seed     bench/python/seed_pipeline.py --load seed (random init, weights read into memory, load_state_dict)
  fast     bench/python/seed_pipeline.py --load fast (meta-device parameters, memory-mapped weights)
and prints per phase (start-up, load, forward, lens decode, page) and in total the median wall time and peak RSS,
the ratios C++/Python, and the compute phases against their bounds from a matmul and a copy timed here. Checks that
every cell's top-1 token agrees. Then greedy generation of --new-tokens tokens: the seed's full-recompute loop in
Python against baukit's KV cache (once each: the Python loop alone takes minutes), with the tokens compared.
Needs Debian's python3-torch; it uses the same libtorch build and OpenBLAS as the C++ programs. When that OpenBLAS
does not know the CPU and falls back to its generic kernels (Debian's 0.3.21 on CPU model 207: "Core: Prescott",
~30 GFLOP/s), every run gets OPENBLAS_CORETYPE for the CPU's vector width (--openblas-core), so that Python's
matmuls are as fast as the machine allows (baukit-lens would switch OpenBLAS to those kernels by itself).
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

GENERIC_OPENBLAS_CORES = {"Prescott", "Core2", "Penryn", "Dunnington", "Nehalem", "Atom", "Katmai", "Coppermine",
                          "Northwood", "Banias", "Sandybridge"}


def openblas_core():
    """The kernel set OpenBLAS picks here, as OPENBLAS_VERBOSE=2 reports it (None if it does not say)."""
    probe = subprocess.run([sys.executable, "-c", "import torch; torch.mm(torch.ones(64, 64), torch.ones(64, 64))"],
                           env=dict(os.environ, OPENBLAS_VERBOSE="2"), capture_output=True, text=True)
    found = re.search(r"Core: (\w+)", probe.stdout + probe.stderr)
    return found.group(1) if found else None


def choose_openblas_core(requested):
    """Sets OPENBLAS_CORETYPE for this process and its children (before torch loads) and returns a note on it."""
    detected = openblas_core()
    if requested == "as-is":
        return f"OpenBLAS core: {detected} (as detected)"
    if requested == "auto":
        with open("/proc/cpuinfo") as f:
            flags = f.read()
        if detected not in GENERIC_OPENBLAS_CORES:
            return f"OpenBLAS core: {detected} (as detected)"
        requested = "SkylakeX" if " avx512f" in flags else "Haswell" if " avx2" in flags else None
        if requested is None:
            return f"OpenBLAS core: {detected} (as detected)"
    os.environ["OPENBLAS_CORETYPE"] = requested
    return (f"OpenBLAS core: detected {detected}; every run uses OPENBLAS_CORETYPE={requested} "
            f"(now: {openblas_core()})")

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPT = ". The Space Needle is located in"  # the seed's prompt (8 tokens)
PHASES = ["start-up", "load", "forward", "decode", "page"]


def run(argv):
    """Wall seconds and stdout of a child process; exits naming it if it fails."""
    start = time.perf_counter()
    child = subprocess.run(argv, capture_output=True, text=True)
    if child.returncode != 0:
        sys.exit(f"failed ({child.returncode}): {' '.join(argv)}\n{child.stderr[-3000:]}")
    return time.perf_counter() - start, child.stdout


def run_measured(argv):
    """Like run, with the child's own peak RSS (wait4 on a forked child)."""
    start = time.perf_counter()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        os.dup2(write, 1)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.execv(argv[0], argv)
    os.close(write)
    chunks = []
    while True:
        chunk = os.read(read, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(read)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed ({status}): {' '.join(argv)}")
    return wall, usage.ru_maxrss * 1024, b"".join(chunks).decode()


def best_seconds(fn, runs=6):
    """The fastest of `runs` timings of fn after a warm-up: the machine's peak rate, less others' noise."""
    fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def machine_bounds():
    """Matmul FLOP/s (the faster of BLAS and oneDNN, both printed), copy and read bandwidth, best of 6 each."""
    import torch
    torch.set_num_threads(2)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    blas = 2 * 2048 ** 3 / best_seconds(lambda: torch.mm(a, b))
    onednn = 0.0
    if torch.backends.mkldnn.is_available():
        bt = b.t().contiguous()
        onednn = 2 * 2048 ** 3 / best_seconds(lambda: torch._C._nn.mkldnn_linear(a.to_mkldnn(), bt).to_dense())
    flops = max(blas, onednn)
    src = torch.ones(1 << 28)
    dst = torch.empty_like(src)
    copy = 2 * src.numel() * 4 / best_seconds(lambda: dst.copy_(src))  # bytes read + written per second
    read = src.numel() * 4 / best_seconds(lambda: src.sum())  # what streaming weights needs: reading only
    return flops, blas, onednn, copy, read


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", default=os.path.join(root, "build"))
    parser.add_argument("--model", default=None, help="default: BUILD/bench-data/gpt2-xl (written if missing)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=100)
    parser.add_argument("--openblas-core", default="auto",
                        help="auto (replace a generic core by the CPU's), as-is, or an OPENBLAS_CORETYPE name")
    args = parser.parse_args()
    blas_note = choose_openblas_core(args.openblas_core)
    print(blas_note, flush=True)
    import torch
    model = args.model or os.path.join(args.build, "bench-data", "gpt2-xl")
    lens_exe = os.path.join(args.build, "tools", "baukit-lens")
    generate_exe = os.path.join(args.build, "bench", "bench-generate")
    pipeline = os.path.join(root, "bench", "python", "seed_pipeline.py")
    work = os.path.join(args.build, "side-by-side")
    os.makedirs(work, exist_ok=True)
    if not os.path.exists(os.path.join(model, "model.safetensors")):
        print(f"writing a random GPT-2-XL-size checkpoint to {model} ...", flush=True)
        run([os.path.join(args.build, "tools", "make-random-checkpoint"), "--preset", "gpt2-xl", "--out", model])
    weight_bytes = os.path.getsize(os.path.join(model, "model.safetensors"))
    with open(os.path.join(model, "config.json")) as f:
        config = json.load(f)

    cpp_json = os.path.join(work, "cpp-lens.json")
    cpp_argv = [lens_exe, "--model", model, "--prompt", PROMPT, "--out", os.path.join(work, "cpp-lens.html"), "--json",
                cpp_json, "--timings", "--threads", "2"]
    # The prompt's ids come from baukit's tokenizer (checked against gpt-tokenizer in the tests): both pipelines
    # decode the same tokens.
    run(cpp_argv)
    with open(cpp_json) as f:
        ids = json.load(f)["ids"]
    py_argv = {mode: [sys.executable, pipeline, "lens", "--model", model, "--ids", ",".join(map(str, ids)), "--load",
                      mode, "--out", os.path.join(work, f"python-{mode}.html"), "--json",
                      os.path.join(work, f"python-{mode}.json")] for mode in ["seed", "fast"]}

    results = {"C++": [], "seed": [], "fast": []}
    order = ["C++", "seed", "fast"]
    for r in range(args.runs):
        for name in order[r % 3:] + order[:r % 3]:
            argv = cpp_argv if name == "C++" else py_argv[name]
            wall, rss, out = run_measured(argv)
            line = next(line for line in out.splitlines() if line.startswith("{") or line.startswith("timings: "))
            phases = json.loads(line.removeprefix("timings: "))
            phases = {k: float(v) for k, v in phases.items() if k in PHASES}
            phases["start-up"] = wall - sum(phases.values())
            phases["total"] = wall
            results[name].append((phases, rss))
            print(f"  run {r + 1} {name:5s} {wall:7.2f} s, peak RSS {rss / 1e9:5.2f} GB", flush=True)

    flops, blas, onednn, copy, bandwidth = machine_bounds()
    median = {name: {p: statistics.median(run[0][p] for run in runs) for p in PHASES + ["total"]}
              for name, runs in results.items()}
    rss = {name: statistics.median(run[1] for run in runs) for name, runs in results.items()}

    print(f"\n{blas_note}")
    print(f"machine: matmul {flops / 1e9:.1f} GFLOP/s (best of BLAS {blas / 1e9:.1f}, oneDNN {onednn / 1e9:.1f}), "
          f"copy {copy / 1e9:.1f} GB/s (read + write), "
          f"read {bandwidth / 1e9:.1f} GB/s; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"model {model}: {weight_bytes / 1e9:.2f} GB; prompt {PROMPT!r} ({len(ids)} tokens); median of {args.runs}")
    print(f"{'phase':10s} {'C++ s':>8s} {'seed s':>8s} {'fast s':>8s} {'seed/C++':>9s} {'fast/C++':>9s}")
    for phase in PHASES + ["total"]:
        c, s, f = median["C++"][phase], median["seed"][phase], median["fast"][phase]
        print(f"{phase:10s} {c:8.3f} {s:8.3f} {f:8.3f} {s / c:8.1f}x {f / c:8.1f}x")
    print(f"{'peak RSS':10s} {rss['C++'] / 1e9:6.2f}GB {rss['seed'] / 1e9:6.2f}GB {rss['fast'] / 1e9:6.2f}GB "
          f"{rss['seed'] / rss['C++']:8.1f}x {rss['fast'] / rss['C++']:8.1f}x")
    print(f"targets: total >= 20x vs seed (is {median['seed']['total'] / median['C++']['total']:.1f}x), >= 2x vs fast "
          f"(is {median['fast']['total'] / median['C++']['total']:.1f}x); C++ peak RSS <= half the seed's "
          f"(is {rss['C++'] / rss['seed']:.2f})")

    # Compute phases against their bounds.
    parameters = weight_bytes / 4
    tokens, layers, width, vocab = len(ids), config["n_layer"], config["n_embd"], config["vocab_size"]
    forward_bound = max(2 * parameters * tokens / flops, weight_bytes / bandwidth)
    decode_bound = 2 * 2 * layers * tokens * width * vocab / flops  # two views: lens and delta lens
    for name in ["C++", "seed", "fast"]:
        print(f"{name:5s} forward {median[name]['forward'] / forward_bound:5.2f}x its bound {forward_bound:.3f} s "
              f"(max of FLOPs and reading the weights); decode {median[name]['decode'] / decode_bound:5.2f}x its "
              f"FLOP bound {decode_bound:.3f} s")

    # Every cell's top-1 token, both views.
    with open(cpp_json) as f:
        cpp = json.load(f)
    for mode in ["seed", "fast"]:
        with open(os.path.join(work, f"python-{mode}.json")) as f:
            py = json.load(f)
        cells = same = 0
        for view in ["lens", "delta_lens"]:
            for layer, row in enumerate(py[view]):
                for t, token in enumerate(row):
                    cells += 1
                    same += cpp[view]["tokens"][layer][t][0] == token
        print(f"top-1 tokens, C++ vs Python ({mode}): {same}/{cells} cells equal")

    # Greedy generation: the seed's loop (full recompute per token) against the KV cache.
    prompt_ids = json.loads(run([generate_exe, "--model", model, "--prompt", "In his NBA career, KC Jones played",
                                 "--new-tokens", "1"])[1])["prompt_ids"]
    cpp_wall, cpp_rss, cpp_out = run_measured([generate_exe, "--model", model, "--prompt",
                                               "In his NBA career, KC Jones played", "--new-tokens",
                                               str(args.new_tokens)])
    cpp_gen = json.loads(cpp_out)
    py_wall, py_rss, py_out = run_measured([sys.executable, pipeline, "generate", "--model", model, "--ids",
                                            ",".join(map(str, prompt_ids)), "--new-tokens", str(args.new_tokens),
                                            "--load", "fast"])
    py_gen = json.loads(py_out)
    token_bound = weight_bytes / bandwidth
    print(f"\ngreedy generation of {args.new_tokens} tokens after {len(prompt_ids)} prompt tokens (one run each):")
    print(f"  C++ KV cache:          {cpp_gen['generate']:7.2f} s = {args.new_tokens / cpp_gen['generate']:5.2f} tok/s "
          f"= {cpp_gen['generate'] / args.new_tokens / token_bound:.2f}x the weight-read bound {token_bound:.3f} s/token")
    print(f"  Python, seed's loop:   {py_gen['generate']:7.2f} s = {args.new_tokens / py_gen['generate']:5.2f} tok/s; "
          f"C++ is {py_gen['generate'] / cpp_gen['generate']:.1f}x faster")
    print(f"  same tokens: {cpp_gen['new_ids'] == py_gen['new_ids']} "
          f"({sum(a == b for a, b in zip(cpp_gen['new_ids'], py_gen['new_ids']))}/{args.new_tokens})")


if __name__ == "__main__":
    main()
