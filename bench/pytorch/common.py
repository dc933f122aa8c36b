"""Shared code of the PyTorch baselines: the binary-image models (nade.py,
fvsbn.py, made.py, pixelcnn.py: run()) and the byte-level sequence models
(rnn.py, lstm.py, gru.py, gpt.py: run_text()).

The command line, the thread setup (done before torch is imported, so that
OpenMP and OpenBLAS start with the right pool sizes), the data (random 0/1 or
binarized MNIST .amat[.gz] files; random tokens or windows of a text file as
arjit's text: datasets), the arjit checkpoint reader (docs/checkpoint.md) and
the timing loop. Run with Debian's python3
(/usr/bin/python3, package python3-torch); nothing here needs pip.
"""

import argparse
import gzip
import json
import os
import statistics
import struct
import sys
import time
import zlib

REPO = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
WARMUP = 2   # as arjit bench
TUNED = "4000000000"   # --tuned-malloc: glibc's mmap and trim thresholds, bytes


def die(msg, code=1):
    print(f"{os.path.basename(sys.argv[0])}: error: {msg}", file=sys.stderr)
    sys.exit(code)


def positive_int(s):
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{s}' is not an integer")
    if v < 1:
        raise argparse.ArgumentTypeError(f"'{s}' must be at least 1")
    return v


def probability(s):
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{s}' is not a number")
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"'{s}' is not in [0, 1]")
    return v


def parse_args(model, variants, doc, batch=100, text=False):
    """Parses the command line; then sets the thread count in the
    environment and imports torch. Returns (args, torch). text: the model
    reads byte tokens (--data is a text file, --limit counts windows)."""
    if text:
        data_help = ("a text file, split as arjit's text:FILE (the first 90%% of the bytes train, the "
                     "rest test); without PATH, tinyshakespeare.txt in $ARJIT_DATA, ./data or "
                     "<repo>/../shared/data. Timing: the first --batch windows of the training split "
                     "(default: random tokens in [0, V)); --ckpt: every window of the test split")
        check = ("Checking: --ckpt FILE loads an arjit checkpoint (train --save) into the "
                 "PyTorch parameters and prints the mean NLL per character of the test split "
                 "of a text file, windows of T + 1 bytes T apart as `arjit eval` scores them, "
                 "the bytes encoded with the checkpoint's vocabulary.")
    else:
        data_help = ("binarized MNIST .amat or .amat.gz; without PATH, "
                     "binarized_mnist_train.amat.gz (timing) or _test (--ckpt) in $ARJIT_DATA, "
                     "./data or <repo>/../shared/data. Default for timing: random 0/1 with --p")
        check = ("Checking: --ckpt FILE loads an arjit checkpoint (train --save) into the "
                 "PyTorch parameters and prints the mean NLL of a data file (default: the "
                 "binarized MNIST test split), to compare with `arjit eval`.")
    p = argparse.ArgumentParser(
        prog=f"{model}.py", description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Timing: one Adam training step (zero_grad, forward, loss = mean NLL, backward, "
               f"opt.step) per iteration; {WARMUP} warm-up steps, then median/min/max ms over "
               "--steps. Prints one JSON line.\n" + check)
    p.add_argument("--batch", type=positive_int, default=batch, help=f"examples per batch (default {batch})")
    p.add_argument("--threads", type=positive_int, default=1,
                   help="torch.set_num_threads and OMP_NUM_THREADS (default 1)")
    p.add_argument("--blas-threads", type=positive_int, default=1,
                   help="OPENBLAS_NUM_THREADS (default 1): Debian's torch calls the pthread OpenBLAS, "
                        "whose own thread pool spins next to torch's OpenMP one; with both at 2 on "
                        "2 cores, steps stall for 0.25 s and more")
    p.add_argument("--steps", type=positive_int, default=20, help="timed steps after the warm-up (default 20)")
    p.add_argument("--variant", choices=variants + ["all"], default="all",
                   help=f"which formulation to time or check (default all: {', '.join(variants)})")
    p.add_argument("--data", nargs="?", const="", default=None, metavar="PATH", help=data_help)
    if not text:
        p.add_argument("--p", type=probability, default=0.13,
                       help="P(x=1) of the random batch (default 0.13, binarized MNIST's mean)")
    p.add_argument("--seed", type=int, default=1, help="torch seed: random data and the init (default 1)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3, as arjit bench)")
    p.add_argument("--tuned-malloc", action="store_true",
                   help="rerun under MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_ = 4e9: glibc "
                        "keeps freed big tensors instead of unmapping them (no page faults per op)")
    p.add_argument("--ckpt", metavar="FILE", help="load an arjit checkpoint and print the mean NLL")
    p.add_argument("--limit", type=positive_int, default=None,
                   help=f"--ckpt: only the first N {'windows' if text else 'examples'} of the data "
                        "file (default all)")
    args = p.parse_args()
    if args.ckpt is not None and args.data is None:
        args.data = ""
    if args.tuned_malloc and any(os.environ.get(v) != TUNED
                                 for v in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        # glibc reads these once, at start-up: start again with them set
        os.environ["MALLOC_MMAP_THRESHOLD_"] = os.environ["MALLOC_TRIM_THRESHOLD_"] = TUNED
        os.execv(sys.executable, [sys.executable] + sys.argv)

    # before torch is loaded: OpenMP and OpenBLAS size their pools at start-up
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
    os.environ["OPENBLAS_NUM_THREADS"] = str(args.blas_threads)
    try:
        import torch
    except ImportError as e:
        die(f"cannot import torch ({e}); on Debian 12: apt-get install python3-torch, "
            "and run with /usr/bin/python3")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    return args, torch


# --- data ---------------------------------------------------------------------

def find_data(name):
    dirs = []
    if os.environ.get("ARJIT_DATA"):
        dirs.append(os.environ["ARJIT_DATA"])
    dirs += ["data", os.path.join(REPO, "..", "shared", "data")]
    tried = []
    for d in dirs:
        for f in (name, name + ".gz"):
            path = os.path.join(d, f)
            tried.append(path)
            if os.path.isfile(path):
                return path
    die(f"{name} not found; looked at: {', '.join(tried)} (set ARJIT_DATA or pass --data PATH)")


def load_amat(path, limit=None, d=784):
    """Rows of 0/1 values separated by blanks (Larochelle & Murray's
    binarized MNIST), as a float32 numpy array [n, d]."""
    import numpy as np
    opener = gzip.open if path.endswith(".gz") else open
    rows = []
    try:
        with opener(path, "rb") as f:
            for ln, line in enumerate(f, 1):
                if limit is not None and len(rows) == limit:
                    break
                if not line.strip():
                    continue
                v = np.frombuffer(line, dtype=np.uint8)
                v = v[(v != 32) & (v != 9) & (v != 10) & (v != 13)]
                if v.size != d or ((v != 48) & (v != 49)).any():
                    die(f"{path}:{ln}: expected {d} values, each 0 or 1")
                rows.append(v - 48)
    except OSError as e:
        die(f"{path}: {e}")
    if not rows:
        die(f"{path}: no examples")
    return np.stack(rows).astype(np.float32)


def batch_x(args, torch, d):
    """The timed batch: the first --batch rows of --data, or random 0/1."""
    if args.data is None:
        x = (torch.rand(args.batch, d) < args.p).float()
        return x, f"random p={args.p}"
    path = args.data or find_data("binarized_mnist_train.amat")
    x = load_amat(path, limit=args.batch, d=d)
    if x.shape[0] < args.batch:
        die(f"{path}: {x.shape[0]} examples, fewer than --batch {args.batch}")
    return torch.from_numpy(x), os.path.basename(path)


# --- arjit checkpoints (docs/checkpoint.md) -----------------------------------

def read_ckpt(path, raw_meta=False):
    """Returns (params, meta): the parameters section as {name: numpy
    array} and the metadata strings (raw_meta: bytes, as the vocabulary
    is). Checks what the C loader checks: magic, version, length, CRC,
    every record, nothing left over."""
    import numpy as np
    buf = read_file(path)
    if buf[:8] != b"ARJITCK1":
        die(f"{path}: not an arjit checkpoint")
    if len(buf) < 40:
        die(f"{path}: truncated checkpoint: {len(buf)} bytes, less than a header")
    version, hlen, flen, ntens, nscal, nmeta, _ = struct.unpack_from("<IIQIIII", buf, 8)
    if version != 1:
        die(f"{path}: checkpoint version {version}: this reader reads version 1")
    if flen != len(buf):
        die(f"{path}: truncated checkpoint: the header says {flen} bytes, the file has {len(buf)}")
    stored, = struct.unpack_from("<I", buf, len(buf) - 4)
    computed = zlib.crc32(buf[:-4]) & 0xffffffff
    if stored != computed:
        die(f"{path}: corrupt checkpoint: CRC32 mismatch (stored {stored:08x}, computed {computed:08x})")
    end = len(buf) - 4
    off = hlen

    def take(fmt):
        nonlocal off
        n = struct.calcsize(fmt)
        if off + n > end:
            die(f"{path}: corrupt checkpoint: record runs past the end at offset {off}")
        v = struct.unpack_from(fmt, buf, off)
        off += n
        return v

    def take_bytes(n):
        nonlocal off
        if off + n > end:
            die(f"{path}: corrupt checkpoint: record runs past the end at offset {off}")
        b = buf[off:off + n]
        off += n
        return b

    params, meta = {}, {}
    for _ in range(ntens):
        section, = take("<I")
        name = take_bytes(take("<I")[0]).decode()
        dtype, rank = take("<II")
        if dtype not in (0, 1) or rank > 6:
            die(f"{path}: corrupt checkpoint: tensor {name}: dtype {dtype}, rank {rank}")
        shape = take(f"<{rank}Q") if rank else ()
        numel = 1
        for s in shape:
            numel *= s
        data = take_bytes(4 * numel)
        arr = np.frombuffer(data, dtype="<f4" if dtype == 0 else "<i4").reshape(shape).copy()
        if section == 0:
            params[name] = arr
    for _ in range(nscal):
        take_bytes(take("<I")[0])
        take("<Q")
    for _ in range(nmeta):
        key = take_bytes(take("<I")[0]).decode()
        value = take_bytes(take("<I")[0])
        meta[key] = value if raw_meta else value.decode(errors="replace")
    if off != end:
        die(f"{path}: corrupt checkpoint: {end - off} bytes left over after the last record")
    return params, meta


def load_ckpt_into(path, torch, named, model):
    """Copies the checkpoint's parameters into the tensors of `named`
    ({name: tensor}); the names and shapes must match exactly. Returns the
    metadata, its values as bytes."""
    params, raw = read_ckpt(path, raw_meta=True)
    meta = {k: v.decode(errors="replace") for k, v in raw.items()}
    if meta.get("model") and os.path.basename(meta["model"]) != f"{model}.graph":
        print(f"warning: {path} was trained on {meta['model']}, not {model}.graph", file=sys.stderr)
    for name, t in named.items():
        if name not in params:
            die(f"{path}: no parameter {name} (it has {', '.join(sorted(params))})")
        if tuple(params[name].shape) != tuple(t.shape):
            die(f"{path}: parameter {name} is {list(params[name].shape)}, the model wants "
                f"{list(t.shape)} (checkpoint dims {meta.get('dims', '?')})")
        with torch.no_grad():
            t.copy_(torch.from_numpy(params[name]))
    extra = set(params) - set(named)
    if extra:
        die(f"{path}: parameters this model does not have: {', '.join(sorted(extra))}")
    return raw


# --- timing -----------------------------------------------------------------

def time_steps(torch, step, steps):
    """WARMUP calls of step(), then `steps` timed ones: ms median/min/max."""
    for _ in range(WARMUP):
        step()
    ms = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        ms.append((time.perf_counter() - t0) * 1e3)
    return {"ms_median": round(statistics.median(ms), 4), "ms_min": round(min(ms), 4),
            "ms_max": round(max(ms), 4)}


def train_step_fn(torch, params, x, nll_fn, lr):
    """A closure doing one Adam step as a PyTorch user writes it."""
    opt = torch.optim.Adam(params, lr=lr)

    def step():
        opt.zero_grad()
        loss = nll_fn(x).mean()
        loss.backward()
        opt.step()
        return loss
    return step


def report(obj):
    print(json.dumps(obj), flush=True)


def header(args, torch, model, dims, data):
    return {"model": model, "framework": "pytorch", "torch": torch.__version__,
            "dims": dims, "batch": args.batch, "threads": args.threads, "blas_threads": args.blas_threads,
            "steps": args.steps, "warmup": WARMUP, "data": data, "opt": "adam", "lr": args.lr,
            "malloc": malloc_setting()}


def malloc_setting():
    """glibc malloc's settings from the environment, as this process runs."""
    env = [f"{v}={os.environ[v]}" for v in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
           if v in os.environ]
    return "glibc, " + " ".join(env) if env else "glibc default"


def check_ckpt(args, torch, model, d, variants, build, nll_fns, ref, chunk):
    """--ckpt: the mean NLL of a data file under an arjit checkpoint, for each
    variant and for variant `ref` in float64 (how far float32 rounding alone
    moves it); chunk(v) examples at a time."""
    p = build(torch)
    meta = load_ckpt_into(args.ckpt, torch, p, model)
    meta = {k: v.decode(errors="replace") for k, v in meta.items()}
    path = args.data or find_data("binarized_mnist_test.amat")
    xs = torch.from_numpy(load_amat(path, limit=args.limit, d=d))
    out = {"model": model, "ckpt": args.ckpt, "ckpt_dims": meta.get("dims"),
           "data": path, "n": xs.shape[0], "threads": args.threads, "nll": {}}
    fns = nll_fns(torch, p)
    fns[ref + "_f64"] = nll_fns(torch, {k: v.detach().double() for k, v in p.items()})[ref]
    for v in variants + [ref + "_f64"]:
        total = 0.0
        with torch.no_grad():
            for s in range(0, xs.shape[0], chunk(v)):
                x = xs[s:s + chunk(v)]
                if v.endswith("f64"):
                    x = x.double()
                total += float(fns[v](x).double().sum())
        out["nll"][v] = round(total / xs.shape[0], 6)
    report(out)


def run(model, doc, d, dims, variants, build, nll_fns, ref, chunk=lambda v: 1000):
    """A model script's main: time every variant's training step (the best
    median is the model's time), or check a checkpoint (--ckpt)."""
    args, torch = parse_args(model, variants, doc)
    chosen = variants if args.variant == "all" else [args.variant]
    if args.ckpt:
        return check_ckpt(args, torch, model, d, chosen, build, nll_fns, ref, chunk)
    x, data = batch_x(args, torch, d)
    out = header(args, torch, model, dims, data)
    out["variants"] = {}
    for v in chosen:
        torch.manual_seed(args.seed)
        p = build(torch)
        step = train_step_fn(torch, list(p.values()), x, nll_fns(torch, p)[v], args.lr)
        out["variants"][v] = time_steps(torch, step, args.steps)
        out["variants"][v]["params"] = numel(p.values())
    best = min(out["variants"], key=lambda v: out["variants"][v]["ms_median"])
    out["best"] = best
    out["ms_median"] = out["variants"][best]["ms_median"]
    report(out)


# --- byte-level sequence models (rnn.py, lstm.py, gru.py, gpt.py) -----------------
#
# A model script gives build(torch) -> {graph name: tensor}, the graph's
# parameters with its init, and variant(torch, p, name) -> (trainable
# tensors, nll, frozen): nll(x) is the NLL of each row of tokens x : [B, T]
# (int64), summed over the T positions; frozen counts the elements of module
# tensors kept fixed (a second bias held at zero). A "module" variant builds
# a torch.nn module from p (copies): Adam then updates the module's tensors.

def read_file(path):
    """The bytes of path, gunzipped if it is gzip."""
    try:
        with open(path, "rb") as f:
            buf = f.read()
    except OSError as e:
        die(f"{path}: {e}")
    if buf[:2] == b"\x1f\x8b":
        buf = gzip.decompress(buf)
    return buf


def text_tokens(path, split, V, vocab=None):
    """The tokens of one split of a text file as arjit's text:FILE makes
    them (datasets.md): train = the first floor(0.9 n) bytes, valid = test
    = the rest; token i is byte vocab[i], vocab by default the sorted
    distinct bytes of the training split. Returns (int64 numpy array, vocab)."""
    import numpy as np
    buf = read_file(path)
    cut = len(buf) * 9 // 10
    if cut == 0 or cut == len(buf):
        die(f"{path}: too short to split into train and test ({len(buf)} bytes)")
    if vocab is None:
        vocab = bytes(sorted(set(buf[:cut])))
    if len(vocab) > V:
        die(f"{path}: {len(vocab)} distinct bytes, more than the model's V = {V}")
    inv = np.full(256, -1, dtype=np.int64)
    inv[np.frombuffer(vocab, dtype=np.uint8)] = np.arange(len(vocab))
    part = buf[:cut] if split == "train" else buf[cut:]
    tok = inv[np.frombuffer(part, dtype=np.uint8)]
    if (tok < 0).any():
        i = int(np.argmax(tok < 0))
        die(f"{path}: byte 0x{part[i]:02x} (offset {i + (0 if split == 'train' else cut)}) of the "
            f"{split} split is not in the vocabulary")
    return tok, vocab


def text_windows(tok, T, limit=None):
    """arjit's windows in order: window i is tokens i T .. i T + T, the
    model gets the last T of them ((ntok - 1) // T windows)."""
    import numpy as np
    n = (len(tok) - 1) // T
    if limit is not None:
        n = min(n, limit)
    if n < 1:
        die(f"{len(tok)} tokens: not one window of T + 1 = {T + 1}")
    return tok[np.arange(n)[:, None] * T + np.arange(1, T + 1)[None, :]]


def shift_tokens(torch, x):
    """The graph's shift(x, axis=1): position t sees x_<t, token 0 first."""
    return torch.cat([x.new_zeros(x.shape[0], 1), x[:, :-1]], 1)


def token_nll(torch, logits, x):
    """sum over T of categorical_nll(logits, x): [B, T, V], [B, T] -> [B]"""
    V = logits.shape[-1]
    return torch.nn.functional.cross_entropy(logits.reshape(-1, V), x.reshape(-1),
                                             reduction="none").view(x.shape).sum(1)


def numel(ts):
    return sum(t.numel() for t in ts)


def check_text(args, torch, model, V, T, variants, build, variant, ref, chunk):
    """--ckpt: the mean NLL per character of the test split of a text file
    under an arjit checkpoint, as `arjit eval` computes it, for each variant
    and for variant `ref` in float64."""
    p = build(torch)
    raw = load_ckpt_into(args.ckpt, torch, p, model)
    path = args.data or find_data("tinyshakespeare.txt")
    tok, vocab = text_tokens(path, "test", V, raw.get("vocab"))
    xs = torch.from_numpy(text_windows(tok, T, args.limit))
    out = {"model": model, "ckpt": args.ckpt, "ckpt_dims": raw.get("dims", b"").decode(errors="replace"),
           "data": path, "vocab": len(vocab), "vocab_from": "ckpt" if "vocab" in raw else "data",
           "windows": xs.shape[0], "T": T, "threads": args.threads, "nll": {}}
    p64 = {k: v.detach().double() for k, v in p.items()}
    for v in variants + [ref + "_f64"]:
        fn = variant(torch, p64, ref)[1] if v.endswith("_f64") else variant(torch, p, v)[1]
        total = 0.0
        with torch.no_grad():
            for s in range(0, xs.shape[0], chunk):
                total += float(fn(xs[s:s + chunk]).double().sum())
        out["nll"][v] = round(total / (xs.shape[0] * T), 6)   # per character, as arjit eval
    report(out)


def run_text(model, doc, V, T, dims, variants, build, variant, ref, chunk=500, batch=32):
    """A sequence model script's main: time every variant's training step on
    a batch of token rows [B, T] (the best median is the model's time), or
    check a checkpoint (--ckpt)."""
    args, torch = parse_args(model, variants, doc, batch=batch, text=True)
    chosen = variants if args.variant == "all" else [args.variant]
    if args.ckpt:
        return check_text(args, torch, model, V, T, chosen, build, variant, ref, chunk)
    if args.data is None:
        x, data = torch.randint(0, V, (args.batch, T)), f"random tokens in [0, {V})"
    else:
        path = args.data or find_data("tinyshakespeare.txt")
        x = torch.from_numpy(text_windows(text_tokens(path, "train", V)[0], T, args.batch))
        if x.shape[0] < args.batch:
            die(f"{path}: {x.shape[0]} windows of {T + 1} bytes, fewer than --batch {args.batch}")
        data = os.path.basename(path)
    out = header(args, torch, model, dims, data)
    out["T"] = T
    out["variants"] = {}
    for v in chosen:
        torch.manual_seed(args.seed)
        params, fn, frozen = variant(torch, build(torch), v)
        with torch.no_grad():
            loss0 = float(fn(x).mean())
        step = train_step_fn(torch, params, x, fn, args.lr)
        out["variants"][v] = time_steps(torch, step, args.steps)
        out["variants"][v].update(params=numel(params), frozen=frozen, loss0=round(loss0, 4))
    best = min(out["variants"], key=lambda v: out["variants"][v]["ms_median"])
    out["best"] = best
    out["ms_median"] = out["variants"][best]["ms_median"]
    out["params"] = out["variants"][best]["params"]
    report(out)
