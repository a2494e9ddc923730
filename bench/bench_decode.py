"""Where a KV-cached decode step spends its time, and what the fp32 / bf16 decode weights cost in quality.

    python bench/bench_decode.py                       # kernels + step breakdown at the peer-comparison size (width 512,
                                                       # depth 8, 8192 codes, batch 4 + guidance = 8 rows, 256 tokens)
    python bench/bench_decode.py --checkpoint runs/vim_mnist_dropout01/final --judge runs/vim_mnist_dropout01_probe/head_pixels_mlp
                                                       # + fp32 vs bf16 decode weights on a trained VIM
    python bench/bench_decode.py --smoke               # seconds: tiny sizes, the whole harness

Three tables (one torch thread, CPU clock: each number is this process's CPU seconds, which the neighbours' load
on a shared machine barely moves; medians of --repeats after a warm-up):
1. kernels: microseconds of one linear of each shape of a decoder block (and the output head) at the decode row
   count, as torch's default `F.linear` (MKL sgemm), as oneDNN on packed fp32 weights (vimtool's default decode
   path, vimtool/sampling/packed_linear.py) and on packed bf16 weights (the `decode_dtype=bf16` option).
2. step: ms per decode step of the VIM and Parti samplers (vimtool.sampling.*.generate_batch, guidance on, top-k
   10% of the codes) split into linears, attention (over the cache, and Parti's cross-attention) and sampling
   (guidance mix, top-k, CDF);
   "rest" is everything else (norms, GELU, residual adds, cache writes, embeddings, Python). Rows: "fp32
   unpacked" (torch's F.linear on the stored weights: the decode path before packing), "fp32" (the default,
   packed), "bf16" (the option), all in the same run.
3. quality (with --checkpoint, a trained class-conditional VIM): the same seed sampled with fp32 and bf16 decode
   weights -- tokens/s, the fraction of identical tokens, bits/token of the samples under the fp32 model, and the
   judge's class agreement (a probe head from `vimtool probe`, e.g. head_pixels_mlp); plus, teacher-forced on the
   fp32 samples, the mean KL(fp32 || bf16) of the next-token distributions and how often their argmax agrees.

Writes bench/results/decode_{kernels,step,quality}.{json,md} (or --out; `smoke_` prefix with --smoke).
"""

from __future__ import annotations

import copy
import statistics
import sys
from contextlib import ExitStack
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # runnable from a checkout without installing: python bench/X.py

from bench.harness import (  # noqa: E402
    RESULTS,
    median_seconds,
    now,
    paired_ratio,
    paired_rounds,
    parser,
    setup,
    write_results,
)
from vimtool.sampling import parti as parti_sampling  # noqa: E402
from vimtool.sampling import vim as vim_sampling  # noqa: E402
from vimtool.sampling.logits import SamplingParams, row_uniforms  # noqa: E402
from vimtool.sampling.packed_linear import PackedLinear, decoding_weights, packing_available  # noqa: E402


def per_call_median(fn, repeats: int, inner: int = 1) -> float:
    """Median seconds of one call of fn, timed as `inner` calls per repeat (microsecond kernels), after a warm-up."""

    def calls():
        for _ in range(inner):
            fn()

    return median_seconds(calls, repeats).median / inner


# ------------------------------------------------------------------------------------------------ 1. kernels
def kernels(a) -> None:
    d, rows = a.dim, 2 * a.batch
    shapes = [("qkv", d, 3 * d), ("attn out", d, d), ("mlp in", d, 4 * d), ("mlp out", 4 * d, d), ("head", d, a.vocab)]
    out = []
    for name, i, o in shapes:
        lin = torch.nn.Linear(i, o).eval()
        x = torch.randn(rows, 1, i)
        with torch.no_grad():
            t_plain = per_call_median(lambda: F.linear(x, lin.weight, lin.bias), a.repeats, a.inner)
            row = [name, f"{i}x{o}", rows, t_plain * 1e6]
            for dtype in (torch.float32, torch.bfloat16):
                if not packing_available("cpu"):
                    row += [None, ""]
                    continue
                packed = PackedLinear(lin, rows, dtype)
                t = per_call_median(lambda: packed(x), a.repeats, a.inner)
                row += [t * 1e6, f"{t_plain / t:.2f}x"]
        row.append(4 * i * o / t_plain / 1e9)  # GB/s of fp32 weights read by the default path
        out.append(row)
    header = ["linear", "in x out", "rows", "F.linear us", "packed fp32 us", "speed-up", "packed bf16 us", "speed-up",
              "F.linear weight GB/s"]  # fmt: skip
    write_results(
        f"{a.prefix}decode_kernels",
        header,
        out,
        a.out,
        extra={"args": vars(a)},
        title=f"One decode-step linear at {rows} rows (batch {a.batch} x 2 with guidance); CPU clock, 1 thread, medians",
    )


# ------------------------------------------------------------------------------------------------ 1d. gemv
@torch.no_grad()
def gemv(a) -> None:
    """Weight read rate (GB/s) of one decode-step linear per shape and row count, streamed from memory: enough
    copies of each weight are cycled that none is in cache when it is read, as in a real decode step. oneDNN packed
    fp32 and bf16 and torch's int8 kernel (PackedLinear with vimtool's kernel switched off) against vimtool's C
    kernel for bf16 and int8 weights (sampling/skinny_gemv.py); all run interleaved round by round."""
    from vimtool.sampling import skinny_gemv

    lib = skinny_gemv.load()
    d = a.dim
    shapes = [("qkv", d, 3 * d), ("mlp in", d, 4 * d), ("mlp out", 4 * d, d), ("head", d, a.vocab)]
    out = []
    for name, i, o in shapes:
        copies = max(2, int((8 << 20 if a.smoke else 192 << 20) // (7 * i * o)))  # fp32 + bf16 + int8
        layers = [torch.nn.Linear(i, o) for _ in range(copies)]
        for rows in a.gemv_rows:
            x = torch.randn(rows, 1, i)
            fp32 = [PackedLinear(lin, rows, torch.float32) for lin in layers]
            bf16 = [PackedLinear(lin, rows, torch.bfloat16) for lin in layers]
            int8 = [PackedLinear(lin, min(rows, 4), torch.int8) for lin in layers]  # torch's int8 kernel
            kernel16, kernel8 = [p.skinny for p in bf16], [p.skinny for p in int8]
            for p in bf16 + int8:
                p.skinny = None  # oneDNN / torch's kernel
            calls = {
                "fp32": lambda: [p(x) for p in fp32],
                "bf16": lambda: [p(x) for p in bf16],
                "kernel bf16": lambda: [k(x) for k in kernel16],
                "int8": lambda: [p(x) for p in int8],
                "kernel int8": lambda: [k(x) for k in kernel8],
            }
            if lib is None:
                calls = {k: v for k, v in calls.items() if not k.startswith("kernel")}
            t = paired_rounds(calls, a.repeats * 5)
            row = [name, f"{i}x{o}", rows]
            for key, nbytes in (("fp32", 4), ("bf16", 2), ("kernel bf16", 2), ("int8", 1), ("kernel int8", 1)):
                row.append(nbytes * i * o / (t[key].median / copies) / 1e9 if key in t else None)
            row += (
                [paired_ratio(t["bf16"], t["kernel bf16"]), paired_ratio(t["int8"], t["kernel int8"])]
                if lib
                else [None] * 2
            )
            out.append(row)
    path = skinny_gemv.path_name(lib) if lib else "not built"
    header = ["linear", "in x out", "rows", "oneDNN fp32", "oneDNN bf16", "kernel bf16", "torch int8", "kernel int8",
              "bf16 speed-up", "int8 speed-up"]  # fmt: skip
    title = (f"One decode-step linear streamed from memory (weights cycled, none in cache), GB/s of weights read: "
             f"oneDNN packed fp32 / bf16, torch's int8 kernel (torch._weight_int8pack_mm) and vimtool's C kernel "
             f"({path}); speed-up = kernel vs oneDNN bf16 / torch int8; paired rounds x{a.repeats * 5}, CPU clock, "
             f"1 thread")  # fmt: skip
    write_results(f"{a.prefix}decode_gemv", header, out, a.out, extra={"args": vars(a)}, title=title)


# ------------------------------------------------------------------------------------------------ 2. step
def step_breakdown(a) -> None:
    import vimtool.nn.layers as layers
    import vimtool.sampling.logits as logits_mod
    import vimtool.sampling.packed_linear as packed_linear
    from bench.bench_peers import TEXT_VOCAB, make_parti, make_vim
    from vimtool.sampling import skinny_gemv

    spent: dict[str, float] = {}
    patched = []

    def timed(owner, attr, key):
        orig = getattr(owner, attr)

        def wrapper(*args, **kw):
            t0 = now()
            y = orig(*args, **kw)
            spent[key] = spent.get(key, 0.0) + now() - t0
            return y

        patched.append((owner, attr, orig))
        setattr(owner, attr, wrapper)

    ns = SimpleNamespace(dim=a.dim, depth=a.depth, heads=a.heads, vocab=a.vocab, text_len=16)
    params = SamplingParams(temperature=1.0, top_k=max(1, a.vocab // 10), guidance_scale=3.0)
    T, B = a.tokens, a.batch
    u = row_uniforms(0, 0, B, T)
    vim = make_vim(ns, T).eval()
    parti = make_parti(ns, T).eval()
    ids = torch.randint(0, TEXT_VOCAB, (B, 16), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(B, 16, dtype=torch.bool)
    runs = {"VIM": lambda dt: vim_sampling.generate_batch(vim, torch.arange(B) % 10, params, u, decode_dtype=dt),
            "Parti": lambda dt: parti_sampling.generate_batch(parti, ids, mask, params, u, decode_dtype=dt)}  # fmt: skip
    rows = []
    pack_min = packed_linear.PACK_MIN_WEIGHTS
    for name, run in runs.items():
        for label in ("fp32 unpacked", "fp32", "bf16", "int8"):
            dtype = label.split()[0]
            # "fp32 unpacked": torch's default F.linear on the weights as stored (the decode path before packing)
            packed_linear.PACK_MIN_WEIGHTS = float("inf") if label == "fp32 unpacked" else pack_min
            run(dtype)  # warm-up
            total = []
            parts: dict[str, list[float]] = {"linear": [], "attention": [], "sampling": []}
            for _ in range(a.repeats):
                timed(layers.F, "scaled_dot_product_attention", "attention")
                timed(layers, "_one_query_attention", "attention")  # the decode-step self-attention on the CPU
                timed(skinny_gemv, "one_query_attention", "attention")  # ... through vimtool's C kernel
                timed(PackedLinear, "forward", "linear")
                timed(torch.nn.Linear, "forward", "linear")
                timed(logits_mod, "sample_from_logits", "sampling")
                spent.clear()
                t0 = now()
                run(dtype)
                total.append(now() - t0)
                for owner, attr, orig in reversed(patched):
                    setattr(owner, attr, orig)
                patched.clear()
                for k in parts:
                    parts[k].append(spent.get(k, 0.0))
            tot = statistics.median(total)
            med = {k: statistics.median(v) for k, v in parts.items()}
            ms = lambda s: s / T * 1e3  # noqa: E731
            rows.append([name, label, B * T / tot, ms(tot), ms(med["linear"]), ms(med["attention"]), ms(med["sampling"]),
                         ms(tot - sum(med.values()))])  # fmt: skip
    packed_linear.PACK_MIN_WEIGHTS = pack_min
    header = ["sampler", "decode weights", "tok/s", "ms/step", "linears", "attention", "sampling", "rest"]
    title = (f"Decode step breakdown: width {a.dim}, depth {a.depth}, {a.vocab} codes, {T} tokens, batch {B} + guidance "
             f"({2 * B} rows); CPU clock, 1 thread, medians of {a.repeats}; ms per step")  # fmt: skip
    write_results(f"{a.prefix}decode_step", header, rows, a.out, extra={"args": vars(a)}, title=title)


# ------------------------------------------------------------------------------------------------ 4. precision
def read_bandwidth(a) -> float:
    """Bytes/s this process streams from memory at one thread: the sum of a tensor far larger than the caches."""
    x = torch.ones((4 << 20) if a.smoke else (64 << 20))  # 256 MB (smoke: 16 MB)
    t = median_seconds(lambda: x.sum(), max(3, a.repeats)).median
    return x.numel() * x.element_size() / t


def weight_bytes(model: torch.nn.Module, rows: int) -> int:
    """Bytes of linear weights one decode step of `rows` rows reads, as the layers are right now (inside
    decoding_weights): vimtool's C kernel's weights where it runs at that row count (1 thread), else the packed ones."""
    per_weight = {"fp32": 4, "bf16": 2, "int8-as-bf16": 2, "int8": 1}
    total = 0
    for m in model.modules():
        if isinstance(m, PackedLinear) and m.skinny is not None and rows <= m.skinny.max_rows:
            k = m.skinny
            total += k.weight.nbytes + (0 if k.scales is None else k.scales.nbytes)
        elif isinstance(m, PackedLinear):
            total += per_weight[m.kind.removesuffix("-unpacked")] * m.in_features * m.out_features + (
                2 * m.out_features if m.kind == "int8" else 0
            )
        elif type(m) is torch.nn.Linear:  # fp32 layers under the packing threshold
            total += 4 * m.weight.numel()
    return total


@torch.no_grad()
def precision(a) -> None:
    """tokens/s of VIM sampling with fp32 / bf16 / int8 decode weights (paired rounds), each against the memory
    roofline: a decode step must read every weight once, so tokens/s <= bandwidth / (bytes per step) x rows."""
    from bench.bench_peers import make_vim

    ns = SimpleNamespace(dim=a.dim, depth=a.depth, heads=a.heads, vocab=a.vocab)
    T = a.precision_tokens
    vim = make_vim(ns, T).eval()
    bandwidth = read_bandwidth(a)
    params = SamplingParams(temperature=1.0, top_k=max(1, a.vocab // 10), guidance_scale=3.0)
    dtypes = ("fp32", "bf16", "int8")
    out, records = [], []
    for batch in a.precision_batches:
        rows = 2 * batch  # guidance: conditional + unconditional row per sample
        labels = torch.arange(batch) % 10
        u = row_uniforms(0, 0, batch, T)
        with ExitStack() as packed:
            # one copy per precision, packed once outside the timed rounds (a sampling run packs once for all its
            # batches): generate_batch's own decoding_weights is then a no-op
            models = {dt: packed.enter_context(decoding_weights(copy.deepcopy(vim), rows, dt)) for dt in dtypes}
            runs = {dt: (lambda dt=dt: vim_sampling.generate_batch(models[dt], labels, params, u, decode_dtype=dt))
                    for dt in dtypes}  # fmt: skip
            timing = paired_rounds(runs, a.repeats)
            # quality: teacher-forced on fp32 samples, every position given the same prefix (free-running sequences
            # diverge for good at the first differing token)
            ref_toks = runs["fp32"]()
            logp = {dt: m(ref_toks[:, :-1], labels).float().log_softmax(-1) for dt, m in models.items()}  # (B, T, V)
            step_bytes = {dt: weight_bytes(m, rows) for dt, m in models.items()}
        for dt in dtypes:
            # + the fp32 KV cache read by the attention, averaged over the T steps
            step = step_bytes[dt] + 2 * a.depth * rows * (T / 2) * a.dim * 4
            tps = batch * T / timing[dt].median
            roofline = batch * bandwidth / step
            agree = (logp[dt].argmax(-1) == logp["fp32"].argmax(-1)).float().mean().item()
            ll = lambda lp: lp.gather(-1, ref_toks[..., None]).mean().item()  # noqa: E731
            rec = {"precision": dt, "batch": batch, "rows": rows, "tokens_per_s": tps,
                   "ratio_vs_fp32": paired_ratio(timing["fp32"], timing[dt]), "roofline_fraction": tps / roofline,
                   "quality": agree, "ll_delta_nats": ll(logp[dt]) - ll(logp["fp32"]), "bytes_per_step_mb": step / 1e6}  # fmt: skip
            records.append(rec)
            out.append(list(rec.values()))
    title = (f"Decode weights fp32 / bf16 / int8: VIM width {a.dim}, depth {a.depth}, {a.vocab} codes, {T} tokens, "
             f"guidance on (2 rows per sample); paired rounds x{a.repeats}, CPU clock, 1 thread. Roofline: read "
             f"bandwidth {bandwidth / 1e9:.1f} GB/s (1-thread sum of a 256 MB tensor, same run) / bytes per step (linear "
             f"weights + fp32 KV cache). quality = teacher-forced argmax agreement with fp32 on fp32 samples")  # fmt: skip
    write_results(f"{a.prefix}decode_precision{'_' + a.tag if a.tag else ''}", list(records[0]), out, a.out, title=title,
                  extra={"args": vars(a), "read_bandwidth_gbs": bandwidth / 1e9, "records": records})  # fmt: skip


# ------------------------------------------------------------------------------------------------ 3. quality
@torch.no_grad()
def quality(a) -> None:
    from vimtool.checkpoint import load_model, read_config, resolve
    from vimtool.models.vim import sequence_bits
    from vimtool.sampling.decode import load_paired_tokenizer

    folder = resolve(a.checkpoint)
    model = load_model(folder).eval()
    n_cls = model.config.num_classes
    labels = torch.arange(max(n_cls, 1)).repeat_interleave(a.per_class) if n_cls else None
    n = a.per_class * max(n_cls, 1)
    params = SamplingParams(guidance_scale=a.guidance)
    head = tokenizer = None
    if a.judge:
        from vimtool.probe import load_probe_head

        tokenizer, identity = load_paired_tokenizer(read_config(folder), None, str(folder), torch.device("cpu"))
        head = load_probe_head(a.judge)
        head.check_compatible(folder, identity)
    samples, rows = {}, []
    for dtype in ("fp32", "bf16", "int8"):
        t0 = now()
        toks = vim_sampling.generate(model, labels, n, params, seed=a.seed, batch_size=a.batch_size, decode_dtype=dtype)
        sec = now() - t0
        samples[dtype] = toks
        bits = (sequence_bits(model, toks, labels) / model.num_tokens).mean().item()
        judge = None
        if head is not None and labels is not None:
            judge = (
                (head.probabilities(tokens=toks, lm=model, tokenizer=tokenizer).argmax(1) == labels)
                .float()
                .mean()
                .item()
            )
        same = (toks == samples["fp32"]).float().mean().item()
        rows.append(
            [
                dtype,
                n,
                n * model.num_tokens / sec,
                f"{100 * same:.1f}%",
                bits,
                None if judge is None else f"{100 * judge:.1f}%",
            ]
        )
    # teacher-forced on the fp32 samples: how far apart are the two next-token distributions?
    ref = samples["fp32"]
    logp = {}
    for dtype in ("fp32", "bf16", "int8"):
        with decoding_weights(model, a.batch_size, dtype):
            logp[dtype] = torch.cat([model(ref[i : i + a.batch_size, :-1], None if labels is None else labels[i : i + a.batch_size]).float().log_softmax(-1)
                                     for i in range(0, n, a.batch_size)])  # (n, T, V)  # fmt: skip
    kl = {dt: (logp["fp32"].exp() * (logp["fp32"] - logp[dt])).sum(-1).mean().item() for dt in ("bf16", "int8")}
    argmax = {dt: (logp["fp32"].argmax(-1) == logp[dt].argmax(-1)).float().mean().item() for dt in ("bf16", "int8")}
    header = [
        "decode weights",
        "samples",
        "tok/s",
        "tokens equal to fp32",
        "bits/token (fp32 model)",
        "judge: asked class",
    ]
    title = (f"fp32 vs bf16 / int8 decode weights on {folder} (seed {a.seed}, {a.per_class} per class, guidance "
             f"{a.guidance}); teacher-forced on the fp32 samples: mean KL(fp32 || bf16, int8) = {kl['bf16']:.2e}, "
             f"{kl['int8']:.2e} nats/token, argmax agreement {100 * argmax['bf16']:.2f}%, {100 * argmax['int8']:.2f}%")  # fmt: skip
    write_results(
        f"{a.prefix}decode_quality",
        header,
        rows,
        a.out,
        extra={"args": vars(a), "kl_nats": kl, "argmax_agreement": argmax},
        title=title,
    )


def main() -> None:
    ap = parser(__doc__, RESULTS)
    ap.set_defaults(clock="cpu")  # one thread, CPU clock: the neighbours' load barely moves it
    ap.add_argument("--only", choices=("kernels", "gemv", "step", "precision", "quality"), default=None)
    ap.add_argument("--tag", default="", help="precision: write decode_precision_TAG (another CPU's run kept beside)")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--depth", type=int, default=8)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--batch", type=int, default=4, help="prompts / class ids per batch (x 2 rows with guidance)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--precision-tokens", type=int, default=64, help="image tokens of the precision table's VIM")
    ap.add_argument("--precision-batches", type=int, nargs="+", default=[1, 4], help="samples per batch (precision)")
    ap.add_argument("--gemv-rows", type=int, nargs="+", default=[1, 2, 3, 4, 8], help="activation rows (gemv)")
    ap.add_argument("--inner", type=int, default=20, help="kernel calls per timed repeat")
    ap.add_argument("--checkpoint", default=None, help="a trained VIM for the quality table")
    ap.add_argument("--judge", default=None, help="a probe head folder scoring class agreement (quality table)")
    ap.add_argument("--per-class", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=1.0)
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    a = setup(ap.parse_args())
    if a.smoke:
        a.dim, a.depth, a.heads, a.vocab, a.tokens, a.batch, a.repeats, a.inner, a.per_class = (
            32,
            2,
            2,
            64,
            16,
            2,
            1,
            2,
            2,
        )
        a.precision_tokens, a.precision_batches, a.gemv_rows = 16, [1], [2]
    if a.only in (None, "kernels"):
        kernels(a)
    if a.only in (None, "gemv"):
        gemv(a)
    if a.only in (None, "step"):
        step_breakdown(a)
    if a.only in (None, "precision"):
        precision(a)
    if a.only in (None, "quality") and a.checkpoint:
        quality(a)


if __name__ == "__main__":
    main()
