"""Which ONNX operators onnxruntime-web 1.30.0 can run on its WebGPU execution provider.

What this table is
------------------
A static, hand-checked copy of the kernel registrations of the *native C++ WebGPU
execution provider* of ONNX Runtime, as used by the npm package onnxruntime-web 1.30.0
(``ort.webgpu.min.mjs`` + ``ort-wasm-simd-threaded.asyncify.wasm``). A node can only
be placed on WebGPU if its (domain, op_type, opset version) falls into one of the
ranges below *and* its input element types are accepted; otherwise ONNX Runtime runs
it on the CPU (wasm) provider, which costs GPU<->CPU copies.

Which execution provider 1.30.0 uses
------------------------------------
The native WebGPU EP (``onnxruntime/core/providers/webgpu/``), not the older JSEP.
Checked on the installed package (/tmp/ortweb/node_modules/onnxruntime-web/dist):

* ``ort.webgpu.min.mjs`` calls ``webgpuInit`` / ``webgpuOnCreateSession``; there is no
  ``jsepInit`` (the only ``jsep`` hits are optional-chained hooks such as
  ``jsepOnCreateSession?.()`` that stay undefined in this build).
* ``strings`` on the asyncify .wasm shows ``onnxruntime::WebGpuExecutionProvider::...``
  symbols, the ``ep.webgpuexecutionprovider.*`` option keys, and 110 build paths under
  ``onnxruntime/core/providers/webgpu/`` and ``onnxruntime/contrib_ops/webgpu/``.
  (A lone ``JsExecutionProvider`` string is just the provider-name constant.)

Where the data came from
------------------------
Repository microsoft/onnxruntime, read through a stored code index (no git checkout).
A ``rel-1.30.0`` tag/branch was not available there, so the exact release commit could
not be read. Files used:

* ``onnxruntime/core/providers/webgpu/webgpu_execution_provider.cc`` -- the newest
  version found in the index (index file id 51936198059; its commit hash was not
  reported). It is recent: ``RegisterKernels(bool enable_graph_capture, bool
  enable_int64)``, Reshape/Identity/Squeeze/Unsqueeze up to opset 25, TopK 24,
  GridSample, RotaryEmbedding 23, RMSNormalization 23. Two older stored versions
  (commits 003f772b21abba32d4310f97b4c8e8035beacf4f and
  9ea5d63bb0c85c302e17d12d6f2e2fa64b120900) were also read and are clearly older
  (there Conv/Gemm/Einsum were still commented out).
* ``onnxruntime/contrib_ops/webgpu/webgpu_contrib_kernels.cc`` -- index file id
  51906050078 (version with ``RegisterWebGpuContribKernels(..., bool
  enable_graph_capture)``, CausalConvWithState, LinearAttention, QMoE).
* Type constraints: ``math/unary_elementwise_ops.cc`` at commit
  12946b3b22c44b2d2a38d01e0ad4c21088679095, ``math/binary_elementwise_ops.cc`` at
  5aeccdd85d030bb98463986a3ffedf3f8860f53f and ``webgpu_supported_types.h``
  (WebGpuSupportedFloatTypes = float, float16; WebGpuSupportedNumberTypes = float,
  float16, int32, uint32).

How it was extracted
--------------------
By reading the ``build_kernel_create_info_function_table`` in the two registration
files (commented-out entries skipped) and the explicit ``kernel_registry->Register``
calls after it. ``ONNX_OPERATOR_VERSIONED_KERNEL_CLASS_NAME(..., a, b, Op)`` became
``(a, b)``; ``ONNX_OPERATOR_KERNEL_CLASS_NAME(..., a, Op)`` became ``(a, None)``.
Registrations in the internal ``com.ms.internal.nhwc`` domain (layout-transformed
Conv, ConvTranspose, MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool,
BatchNormalization, DepthToSpace, InstanceNormalization) are left out: users never
write that domain; ONNX Runtime rewrites NCHW nodes into it itself.

Known gaps and doubts
---------------------
* The registration file read is *older than 1.30.0*: the 1.30.0 wasm contains code
  for files whose kernels are not in the table read, so those ops are probably
  supported in 1.30.0 but are NOT listed here (their opset ranges are unknown):
  see ``PROBABLY_SUPPORTED_BUT_NOT_TABLED``. Conversely, ops in this table could in
  principle have changed ranges in 1.30.0 (unlikely to have been removed).
* ``WEBGPU_TYPES`` only covers ops whose ``TypeConstraint("T", ...)`` was actually read
  (element-wise unary/binary ops, Not, And, Clip, Range). Everything else (Gather,
  Shape, Reshape, Concat, Where, Conv, MatMul, ...) is left out because its .cc was
  not read in the time available -- absence means "not determined", not "no types".
* int64: the 1.30 EP registers Cast, Range, Unsqueeze, Expand (and, per the wasm
  symbol ``RegisterClipInt64Kernels``, Clip) with int64 *only when* the EP option
  ``enableInt64`` is on. The EP forces it on when ``enableGraphCapture`` is true;
  ``ort.webgpu.min.mjs`` 1.30.0 forwards ``enableGraphCapture`` but has no
  ``enableInt64`` string, so in a normal browser session int64 is off for those ops.
  The version of binary_elementwise_ops.cc read accepts no int64; a newer
  ``webgpu_supported_types.h`` defines ``GetOpTypeConstraints(enable_int64,
  enable_bool)``, so some ops may accept int64/bool conditionally in 1.30 (unverified).
* ``GetCapability`` also moves small shape-computation subgraphs to CPU
  (``GetCpuPreferredNodes``) and honours ``forceCpuNodeNames``; a registered kernel
  therefore does not guarantee GPU placement.
"""

ORT_WEB_VERSION = "1.30.0"

_ONNX = ""
_MS = "com.microsoft"

# (domain, op_type) -> registered opset ranges (since, until inclusive; None = open-ended).
WEBGPU_KERNELS: dict[tuple[str, str], tuple[tuple[int, int | None], ...]] = {
    # --- unary math (T = float, float16) ---
    (_ONNX, "Abs"): ((6, 12), (13, None)),
    (_ONNX, "Neg"): ((6, 12), (13, None)),
    (_ONNX, "Floor"): ((6, 12), (13, None)),
    (_ONNX, "Ceil"): ((6, 12), (13, None)),
    (_ONNX, "Reciprocal"): ((6, 12), (13, None)),
    (_ONNX, "Sqrt"): ((6, 12), (13, None)),
    (_ONNX, "Exp"): ((6, 12), (13, None)),
    (_ONNX, "Erf"): ((9, 12), (13, None)),
    (_ONNX, "Sigmoid"): ((6, 12), (13, None)),
    (_ONNX, "HardSigmoid"): ((6, None),),
    (_ONNX, "Log"): ((6, 12), (13, None)),
    (_ONNX, "Sin"): ((7, None),),
    (_ONNX, "Cos"): ((7, None),),
    (_ONNX, "Tan"): ((7, None),),
    (_ONNX, "Asin"): ((7, None),),
    (_ONNX, "Acos"): ((7, None),),
    (_ONNX, "Atan"): ((7, None),),
    (_ONNX, "Sinh"): ((9, None),),
    (_ONNX, "Cosh"): ((9, None),),
    (_ONNX, "Asinh"): ((9, None),),
    (_ONNX, "Acosh"): ((9, None),),
    (_ONNX, "Atanh"): ((9, None),),
    (_ONNX, "Tanh"): ((6, 12), (13, None)),
    (_ONNX, "Not"): ((1, None),),
    (_ONNX, "Cast"): ((6, 8), (9, 12), (13, 18), (19, 20), (21, 22), (23, None)),
    # --- activations ---
    (_ONNX, "Clip"): ((11, 11), (12, 12), (13, None)),
    (_ONNX, "Elu"): ((6, None),),
    (_ONNX, "Relu"): ((6, 12), (13, 13), (14, None)),
    (_ONNX, "LeakyRelu"): ((6, 15), (16, None)),
    (_ONNX, "ThresholdedRelu"): ((10, None),),
    (_ONNX, "Gelu"): ((20, None),),
    (_ONNX, "Softplus"): ((1, 21), (22, None)),
    # --- binary math / comparison ---
    (_ONNX, "Add"): ((7, 12), (13, 13), (14, None)),
    (_ONNX, "Sub"): ((7, 12), (13, 13), (14, None)),
    (_ONNX, "Mul"): ((7, 12), (13, 13), (14, None)),
    (_ONNX, "Div"): ((7, 12), (13, 13), (14, None)),
    (_ONNX, "Pow"): ((7, 11), (12, 12), (13, 14), (15, None)),
    (_ONNX, "Equal"): ((7, 10), (11, 12), (13, 18), (19, None)),
    (_ONNX, "Greater"): ((7, 8), (9, 12), (13, None)),
    (_ONNX, "GreaterOrEqual"): ((12, 15), (16, None)),
    (_ONNX, "Less"): ((7, 8), (9, 12), (13, None)),
    (_ONNX, "LessOrEqual"): ((12, 15), (16, None)),
    (_ONNX, "And"): ((7, None),),
    # --- shape / data movement ---
    (_ONNX, "Shape"): ((1, 12), (13, 14), (15, 18), (19, 20), (21, 22), (23, None)),
    (_ONNX, "Reshape"): ((5, 12), (13, 13), (14, 18), (19, 20), (21, 22), (23, 24), (25, None)),
    (_ONNX, "Identity"): (
        (1, 12),
        (13, 13),
        (14, 15),
        (16, 18),
        (19, 20),
        (21, 22),
        (23, 23),
        (24, 24),
        (25, None),
    ),
    (_ONNX, "Squeeze"): ((1, 10), (11, 12), (13, 20), (21, 22), (23, 23), (24, None)),
    (_ONNX, "Unsqueeze"): ((1, 10), (11, 12), (13, 20), (21, 22), (23, 23), (24, 24), (25, None)),
    (_ONNX, "Flatten"): ((1, 8), (9, 10), (11, 12), (13, 20), (21, None)),
    (_ONNX, "Transpose"): ((1, 12), (13, 20), (21, 22), (23, 23), (24, None)),
    (_ONNX, "Concat"): ((1, 3), (4, 10), (11, 12), (13, None)),
    (_ONNX, "Split"): ((1, 1), (2, 10), (11, 12), (13, 17), (18, None)),
    (_ONNX, "Expand"): ((8, 12), (13, None)),
    (_ONNX, "Tile"): ((6, 12), (13, None)),
    (_ONNX, "Slice"): ((1, 9), (10, 10), (11, 12), (13, None)),
    (_ONNX, "Pad"): ((2, 10), (11, 12), (13, 17), (18, 18), (19, 20), (21, 22), (23, None)),
    (_ONNX, "Where"): ((9, 15), (16, None)),
    (_ONNX, "Gather"): ((1, 10), (11, 12), (13, None)),
    (_ONNX, "GatherElements"): ((11, 12), (13, None)),
    (_ONNX, "GatherND"): ((11, 11), (12, 12), (13, None)),
    (_ONNX, "ScatterND"): ((11, 12), (13, 15), (16, 17), (18, None)),
    (_ONNX, "ScatterElements"): ((11, 12), (13, 15), (16, 17), (18, None)),
    (_ONNX, "DepthToSpace"): ((11, 12), (13, None)),
    (_ONNX, "Resize"): ((10, 10), (11, 12), (13, 17), (18, 18), (19, None)),
    (_ONNX, "GridSample"): ((16, 19),),
    (_ONNX, "Range"): ((11, None),),
    # --- reductions / arg ---
    (_ONNX, "ReduceMax"): ((1, 10), (11, 11), (12, 12), (13, 17), (18, 19), (20, None)),
    (_ONNX, "ReduceMin"): ((1, 10), (11, 11), (12, 12), (13, 17), (18, 19), (20, None)),
    (_ONNX, "ReduceMean"): ((1, 10), (11, 12), (13, 17), (18, None)),
    (_ONNX, "ReduceProd"): ((1, 10), (11, 12), (13, 17), (18, None)),
    (_ONNX, "ReduceSum"): ((1, 10), (11, 12), (13, None)),
    (_ONNX, "ReduceL1"): ((1, 10), (11, 12), (13, 17), (18, None)),
    (_ONNX, "ReduceL2"): ((1, 10), (11, 12), (13, 17), (18, None)),
    (_ONNX, "ReduceLogSum"): ((1, 10), (11, 12), (13, 17), (18, None)),
    (_ONNX, "ReduceSumSquare"): ((1, 10), (11, 12), (13, 17), (18, None)),
    (_ONNX, "ReduceLogSumExp"): ((1, 10), (11, 12), (13, 17), (18, None)),
    (_ONNX, "ArgMax"): ((1, 10), (11, 12), (13, None)),
    (_ONNX, "ArgMin"): ((1, 10), (11, 12), (13, None)),
    (_ONNX, "CumSum"): ((11, 13), (14, None)),
    (_ONNX, "TopK"): ((1, 9), (10, 10), (11, 23), (24, None)),
    # --- NN ---
    (_ONNX, "Conv"): ((1, 10), (11, 21), (22, None)),
    (_ONNX, "ConvTranspose"): ((1, 10), (11, None)),
    (_ONNX, "MaxPool"): ((1, 7), (8, 9), (10, 10), (11, 11), (12, None)),
    (_ONNX, "AveragePool"): ((7, 9), (10, 10), (11, None)),
    (_ONNX, "GlobalAveragePool"): ((1, None),),
    (_ONNX, "GlobalMaxPool"): ((1, None),),
    (_ONNX, "Gemm"): ((7, 8), (9, 10), (11, 12), (13, None)),
    (_ONNX, "MatMul"): ((1, 12), (13, None)),
    (_ONNX, "Softmax"): ((1, 10), (11, 12), (13, None)),
    (_ONNX, "Einsum"): ((12, None),),
    # LayerNormalization (1, 16) comes from the contrib file (old contrib op that used
    # the ONNX domain); (17, None) is the real ONNX op.
    (_ONNX, "LayerNormalization"): ((1, 16), (17, None)),
    (_ONNX, "SimplifiedLayerNormalization"): ((1, None),),  # contrib op registered in "" domain
    (_ONNX, "RMSNormalization"): ((23, None),),
    (_ONNX, "LpNormalization"): ((1, 21), (22, None)),
    (_ONNX, "InstanceNormalization"): ((1, 5), (6, 21), (22, None)),
    (_ONNX, "BatchNormalization"): ((7, 8), (9, 13), (14, 14), (15, None)),
    (_ONNX, "RotaryEmbedding"): ((23, None),),
    (_ONNX, "DequantizeLinear"): ((10, 12), (13, 18), (19, 20), (21, 22), (23, None)),
    # --- control flow ---
    (_ONNX, "If"): ((1, 10), (11, 12), (13, 18), (19, 20), (21, None)),
    # --- com.microsoft contrib ops (all opset 1) ---
    (_MS, "Attention"): ((1, None),),
    (_MS, "BiasAdd"): ((1, None),),
    (_MS, "BiasGelu"): ((1, None),),
    (_MS, "BiasSplitGelu"): ((1, None),),
    (_MS, "CausalConvWithState"): ((1, None),),
    (_MS, "FastGelu"): ((1, None),),
    (_MS, "FusedConv"): ((1, None),),
    (_MS, "GatherBlockQuantized"): ((1, None),),
    (_MS, "Gelu"): ((1, None),),
    (_MS, "GroupQueryAttention"): ((1, None),),
    (_MS, "LinearAttention"): ((1, None),),
    (_MS, "MatMulNBits"): ((1, None),),
    (_MS, "MultiHeadAttention"): ((1, None),),
    (_MS, "QMoE"): ((1, None),),
    (_MS, "QuickGelu"): ((1, None),),
    (_MS, "RotaryEmbedding"): ((1, None),),
    (_MS, "SkipLayerNormalization"): ((1, None),),
    (_MS, "SkipSimplifiedLayerNormalization"): ((1, None),),
}

_FLOATS = frozenset({"float", "float16"})
_NUMBERS = frozenset({"float", "float16", "int32", "uint32"})

# (domain, op_type) -> element types accepted by the main type constraint "T".
# Only ops whose TypeConstraint was actually read are listed (see module docstring).
WEBGPU_TYPES: dict[tuple[str, str], frozenset[str]] = {
    **{
        (_ONNX, op): _FLOATS
        for op in (
            "Abs",
            "Neg",
            "Floor",
            "Ceil",
            "Reciprocal",
            "Sqrt",
            "Exp",
            "Erf",
            "Log",
            "Sigmoid",
            "HardSigmoid",
            "Sin",
            "Cos",
            "Tan",
            "Asin",
            "Acos",
            "Atan",
            "Sinh",
            "Cosh",
            "Asinh",
            "Acosh",
            "Atanh",
            "Tanh",
            "Elu",
            "Gelu",
            "Relu",
            "LeakyRelu",
            "ThresholdedRelu",
            "Clip",  # float and float16 typed kernels; int64 only with enableInt64 (see NOTES)
        )
    },
    **{
        (_ONNX, op): _NUMBERS
        for op in (
            "Add",
            "Sub",
            "Mul",
            "Div",
            "Pow",
            "Equal",
            "Greater",
            "Less",
            "GreaterOrEqual",
            "LessOrEqual",
        )
    },
    (_ONNX, "Not"): frozenset({"bool"}),
    (_ONNX, "And"): frozenset({"bool"}),  # ONNX And is bool-only
    (_ONNX, "Range"): frozenset({"float", "int32"}),  # + int64 only with enableInt64
}

# Restrictions worth telling a user; one short line each.
NOTES: dict[tuple[str, str], str] = {
    (
        _ONNX,
        "Clip",
    ): (
        "Opset 6-10 (min/max attributes) not supported; min/max inputs are read on CPU. int64 only with"
        " enableInt64."
    ),
    (
        _ONNX,
        "Cast",
    ): (
        "int64 in/out only when the EP option enableInt64 is on (forced on by enableGraphCapture); off by"
        " default in ort-web."
    ),
    (_ONNX, "Range"): "float/int32 kernels; int64 only with enableInt64 (off by default in ort-web).",
    (_ONNX, "Unsqueeze"): "int64 data only with enableInt64 (off by default in ort-web).",
    (_ONNX, "Expand"): "int64 data only with enableInt64 (off by default in ort-web).",
    (
        _ONNX,
        "Add",
    ): (
        "Same for Sub/Mul/Div/Pow: types from an older source, no int64; 1.30 may add int64 behind"
        " enableInt64."
    ),
    (
        _ONNX,
        "Equal",
    ): "Types read from an older source: float/float16/int32/uint32 only; int64/bool unverified for 1.30.",
    (_ONNX, "Pow"): "Computed in f32 (pow(vec4<f32>)); exponent type T1 also float/float16/int32/uint32.",
    (_ONNX, "Tanh"): "Uses an exp-based formula (WGSL tanh overflows for large inputs).",
    (_ONNX, "Gelu"): "Both approximate='none' (erf) and 'tanh' supported.",
    (_ONNX, "Resize"): "NCHW only: the EP refuses NHWC layout conversion for Resize.",
    (_ONNX, "GridSample"): "Only opset 16-19 registered (opset 20+ falls back to CPU); NCHW only.",
    (_ONNX, "InstanceNormalization"): "Kept in NCHW (EP prefers NCHW for performance).",
    (
        _ONNX,
        "Conv",
    ): "Also registered in the internal NHWC domain (layout transform, preferredLayout option).",
    (
        _ONNX,
        "DequantizeLinear",
    ): "Registered untyped here; supported x types not verified (older sources: uint8/int8/int32).",
    (
        _ONNX,
        "Shape",
    ): "Output is int64 (ONNX-mandated); shape subgraphs may be moved to CPU by GetCpuPreferredNodes.",
    (
        _MS,
        "Attention",
    ): (
        "Falls back to CPU if mask_index, past, past_seq_len or present is used, or"
        " past_present_share_buffer=1."
    ),
    (
        _MS,
        "GroupQueryAttention",
    ): "Registered separately; its input memory placement differs when graph capture is on.",
    (
        _MS,
        "MatMulNBits",
    ): "Quantized-weight MatMul; the wasm also has dp4a and subgroup-matrix code paths for it.",
}

# Source files present in the 1.30.0 wasm (build paths found with `strings`) whose kernels
# are NOT in the registration tables read above. These ops are probably supported by
# 1.30.0 but their op names / opset ranges could not be read, so they are not tabled.
PROBABLY_SUPPORTED_BUT_NOT_TABLED: tuple[str, ...] = (
    "onnxruntime/core/providers/webgpu/rnn/gru.cc",  # ONNX GRU
    "onnxruntime/core/providers/webgpu/rnn/lstm.cc",  # ONNX LSTM
    "onnxruntime/core/providers/webgpu/math/dft.cc",  # ONNX DFT
    "onnxruntime/core/providers/webgpu/tensor/trilu.cc",  # ONNX Trilu
    "onnxruntime/contrib_ops/webgpu/bert/engram_gate.cc",
    "onnxruntime/contrib_ops/webgpu/bert/gated_add.cc",
    "onnxruntime/contrib_ops/webgpu/bert/hadamard_transform.cc",
    "onnxruntime/contrib_ops/webgpu/bert/kv_cache_block_quant_int8.cc",
    "onnxruntime/contrib_ops/webgpu/bert/mrotary_embedding.cc",
    "onnxruntime/contrib_ops/webgpu/bert/ngram_hash_mapping.cc",
    "onnxruntime/contrib_ops/webgpu/bert/paged_attention.cc",
    "onnxruntime/contrib_ops/webgpu/bert/turbo_quant_hadamard.cc",
    "onnxruntime/contrib_ops/webgpu/quantization/matmul_bnb4.cc",
)


def is_supported(domain: str, op_type: str, opset: int) -> bool:
    """True if a WebGPU kernel is registered for this op at this opset version.

    ``opset`` is the model's opset import for that domain. ``domain`` uses ONNX spelling: "" (or "ai.onnx")
    for standard ops, "com.microsoft"
    for contrib ops. Element types and the restrictions in NOTES are not checked.
    """
    if domain == "ai.onnx":
        domain = ""
    for since, until in WEBGPU_KERNELS.get((domain, op_type), ()):
        if opset >= since and (until is None or opset <= until):
            return True
    return False
