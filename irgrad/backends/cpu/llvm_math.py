"""Inline polynomial exp/log and rational tanh for float32 as LLVM IR (Cephes and Eigen
coefficients).

Scalar libm calls stop the loop vectorizer (34-60x slower, ../shared/notes/cpu-backend.md);
these small always-inline functions vectorize with the loops that call them. Maximum
relative error is about 3e-7 over the float range. Special values behave like libm's:
exp(-inf) = 0, exp(inf) = inf, exp of x < -87.3 is subnormal (down to exp(-103.97)),
log(0) = -inf, log(x < 0) = nan, tanh saturates to exactly +-1 (as float32 rounding
does), and NaN propagates.
"""

from __future__ import annotations

import struct


def f32_hex(x: float) -> str:
    """An LLVM float literal: the double whose value is x rounded to float32, in hex."""
    f = struct.unpack("<f", struct.pack("<f", x))[0] if x == x and abs(x) != float("inf") else x
    return "0x%016X" % struct.unpack("<Q", struct.pack("<d", f))[0]


def f64_hex(x: float) -> str:
    return "0x%016X" % struct.unpack("<Q", struct.pack("<d", x))[0]


def _poly(var: str, coeffs, prefix: str, lines: list[str]) -> str:
    """Horner evaluation with fused multiply-adds; returns the result register."""
    acc = f32_hex(coeffs[0])
    for i, c in enumerate(coeffs[1:]):
        lines.append(f"  %{prefix}{i} = call float @llvm.fma.f32(float {acc}, float {var}, float {f32_hex(c)})")
        acc = f"%{prefix}{i}"
    return acc


def exp_f32() -> str:
    lines = ["define internal float @irgrad_expf(float %x) alwaysinline {"]
    lines += [
        f"  %lo = fcmp olt float %x, {f32_hex(-103.97208)}",
        f"  %hi = fcmp ogt float %x, {f32_hex(88.72283)}",
        f"  %c1 = call float @llvm.maxnum.f32(float %x, float {f32_hex(-103.97208)})",
        f"  %c = call float @llvm.minnum.f32(float %c1, float {f32_hex(88.72283)})",
        f"  %t = fmul float %c, {f32_hex(1.44269504088896341)}",
        "  %n = call float @llvm.rint.f32(float %t)",
        f"  %r1 = call float @llvm.fma.f32(float %n, float {f32_hex(-0.693359375)}, float %c)",
        f"  %r = call float @llvm.fma.f32(float %n, float {f32_hex(2.12194440e-4)}, float %r1)",
    ]
    p = _poly("%r", [1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
                     1.6666665459e-1, 5.0000001201e-1], "p", lines)
    lines += [
        "  %rr = fmul float %r, %r",
        f"  %q1 = call float @llvm.fma.f32(float {p}, float %rr, float %r)",
        f"  %q = fadd float %q1, {f32_hex(1.0)}",
        "  %ni = fptosi float %n to i32",
        # 2^n built in two halves so n = 128 (exp near 88.7) does not overflow the exponent
        "  %n2 = ashr i32 %ni, 1",
        "  %n3 = sub i32 %ni, %n2",
        "  %e2 = add i32 %n2, 127",
        "  %e3 = add i32 %n3, 127",
        "  %b2 = shl i32 %e2, 23",
        "  %b3 = shl i32 %e3, 23",
        "  %s2 = bitcast i32 %b2 to float",
        "  %s3 = bitcast i32 %b3 to float",
        "  %y1 = fmul float %q, %s2",
        "  %y2 = fmul float %y1, %s3",
        "  %y3 = select i1 %lo, float 0.0, float %y2",
        f"  %y4 = select i1 %hi, float {f32_hex(float('inf'))}, float %y3",
        "  %nan = fcmp uno float %x, 0.0",  # the clamps above would turn NaN into a number
        "  %y = select i1 %nan, float %x, float %y4",
        "  ret float %y",
        "}",
    ]
    return "\n".join(lines)


def log_f32() -> str:
    lines = ["define internal float @irgrad_logf(float %x0) alwaysinline {"]
    lines += [
        # scale subnormals into the normal range first
        f"  %sub = fcmp olt float %x0, {f32_hex(1.17549435e-38)}",
        f"  %xs = fmul float %x0, {f32_hex(8388608.0)}",
        "  %x = select i1 %sub, float %xs, float %x0",
        "  %eadj = select i1 %sub, i32 23, i32 0",
        "  %bits = bitcast float %x to i32",
        "  %eb = lshr i32 %bits, 23",
        "  %ebm = and i32 %eb, 255",
        "  %e0 = sub i32 %ebm, 126",
        "  %e1 = sub i32 %e0, %eadj",
        "  %mb = and i32 %bits, 8388607",
        "  %mb2 = or i32 %mb, 1056964608",  # mantissa in [0.5, 1)
        "  %m0 = bitcast i32 %mb2 to float",
        f"  %small = fcmp olt float %m0, {f32_hex(0.707106781186547524)}",
        "  %m2 = fadd float %m0, %m0",
        "  %m = select i1 %small, float %m2, float %m0",
        "  %e = select i1 %small, i32 1, i32 0",
        "  %ef = sub i32 %e1, %e",
        f"  %z = fsub float %m, {f32_hex(1.0)}",
        "  %zz = fmul float %z, %z",
    ]
    p = _poly("%z", [7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1,
                     1.4249322787e-1, -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1,
                     3.3333331174e-1], "p", lines)
    lines += [
        f"  %t1 = fmul float {p}, %z",
        "  %t2 = fmul float %t1, %zz",
        "  %fe = sitofp i32 %ef to float",
        f"  %t3 = call float @llvm.fma.f32(float %fe, float {f32_hex(-2.12194440e-4)}, float %t2)",
        f"  %t4 = call float @llvm.fma.f32(float %zz, float {f32_hex(-0.5)}, float %t3)",
        "  %t5 = fadd float %z, %t4",
        f"  %y0 = call float @llvm.fma.f32(float %fe, float {f32_hex(0.693359375)}, float %t5)",
        # special values: log(0) = -inf, log(x<0) = nan, log(inf) = inf, log(nan) = nan
        "  %iz = fcmp oeq float %x0, 0.0",
        "  %ineg = fcmp olt float %x0, 0.0",
        f"  %iinf = fcmp oeq float %x0, {f32_hex(float('inf'))}",
        "  %inan = fcmp uno float %x0, 0.0",
        f"  %y1 = select i1 %iz, float {f32_hex(float('-inf'))}, float %y0",
        f"  %y2 = select i1 %ineg, float {f32_hex(float('nan'))}, float %y1",
        f"  %y3 = select i1 %iinf, float {f32_hex(float('inf'))}, float %y2",
        "  %y = select i1 %inan, float %x0, float %y3",
        "  ret float %y",
        "}",
    ]
    return "\n".join(lines)


def tanh_f32() -> str:
    """tanh x = x P(x^2) / Q(x^2) on x clamped to [-7.9053, 7.9053] (Eigen's rational
    approximation: max relative error 4e-7 in float32, one division and no exp, about
    half the work of an exp-based form: 1M elements in 395 us against 700), x itself for
    |x| < 4e-4, exactly +-1 where tanh rounds to +-1 in float32 (|x| > 9.0109, so that
    1 - tanh^2 and gelu's 1 + tanh are exactly 0 there, as in numpy), NaN passed through."""
    lines = ["define internal float @irgrad_tanhf(float %x) alwaysinline {"]
    lines += [
        f"  %c1 = call float @llvm.maxnum.f32(float %x, float {f32_hex(-7.90531110763549805)})",
        f"  %c = call float @llvm.minnum.f32(float %c1, float {f32_hex(7.90531110763549805)})",
        "  %z = fmul float %c, %c",
    ]
    p = _poly("%z", [-2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11,
                     5.12229709037114e-08, 1.48572235717979e-05, 6.37261928875436e-04,
                     4.89352455891786e-03], "p", lines)
    q = _poly("%z", [1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03,
                     4.89352518554385e-03], "q", lines)
    lines += [
        f"  %num = fmul float {p}, %c",
        f"  %t = fdiv float %num, {q}",
        # tanh x = x to float precision for |x| < 4e-4 (keeps subnormal inputs exact)
        "  %ax = call float @llvm.fabs.f32(float %x)",
        f"  %tiny = fcmp olt float %ax, {f32_hex(0.0004)}",
        "  %t2 = select i1 %tiny, float %x, float %t",
        # tanh x rounds to 1 in float32 once 1 - tanh x < 2^-25, i.e. x > ln(2^26 - 1) / 2
        f"  %sat = fcmp ogt float %ax, {f32_hex(9.010913)}",
        f"  %one = call float @llvm.copysign.f32(float {f32_hex(1.0)}, float %x)",
        "  %t3 = select i1 %sat, float %one, float %t2",
        "  %nan = fcmp uno float %x, 0.0",
        "  %y = select i1 %nan, float %x, float %t3",
        "  ret float %y",
        "}",
    ]
    return "\n".join(lines)


INTRINSICS_F32 = """declare float @llvm.fma.f32(float, float, float)
declare float @llvm.maxnum.f32(float, float)
declare float @llvm.minnum.f32(float, float)
declare float @llvm.rint.f32(float)
declare float @llvm.fabs.f32(float)
declare float @llvm.copysign.f32(float, float)"""


def math_library() -> str:
    return "\n\n".join([INTRINSICS_F32, exp_f32(), log_f32(), tanh_f32()])
