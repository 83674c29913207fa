"""The ONNX backend node test cases run through ``hone optimize --target generic``.

Each case is a folder ``<case>/`` with ``model.onnx`` (one ONNX node, or a small function graph)
and ``test_data_set_N/{input,output}_K.pb`` (tensors, or sequence/optional protos where the
model's type says so), fetched by ``tests/tools/fetch_onnx_node_data.py``. For every case:

1. the original model runs on onnxruntime (CPU, graph optimizations off) and its outputs are
   compared with the expected ones the way onnx's backend runner compares them (shape, dtype,
   ``assert_allclose`` with rtol 1e-3 / atol 1e-7, strings exactly, sequences element-wise);
   a case onnxruntime does not load, run or agree with is ``ort_fail``: counted, not hone's;
2. otherwise ``hone.optimize(path, target="generic", verify=False)`` rewrites it (unverified, so
   a pass that breaks the answer is not rolled back but caught here), the result is saved with
   ``Model.save`` and run on onnxruntime the same way; equal outputs -> ``pass``, anything else
   (optimize raises, the saved model does not load or run, outputs differ) -> ``fail``.

A pass that raises is skipped by the pipeline (status ``failed``) and the case can still pass;
those are recorded in ``pass_errors`` so that they are seen.

Element types numpy lacks (bfloat16, the float8s, 4- and 2-bit ints): onnx's numpy_helper gives
ml_dtypes arrays, which onnxruntime's Python API neither takes nor returns; they travel as
OrtValues filled from and read back as raw bytes (sub-byte types packed, lowest bits first), so
that the Cast/CastLike/QuantizeLinear cases of those types are checked too.

One code path for the test (tests/passes/test_onnx_backend_nodes.py) and the benchmark script
(benchmarks/onnx_node_suite.py): ``run_cases`` over ``case_dirs``.
"""

from __future__ import annotations

import ctypes
import logging
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

import hone

REPO_ROOT = Path(__file__).resolve().parents[2]
NODE_DATA_DIR = REPO_ROOT / ".cache" / "onnx-node-data" / "node"
# onnx's backend runner defaults (onnx/backend/test/loader); node cases carry no data.json overrides.
RTOL = 1e-3
ATOL = 1e-7

PASS, FAIL, ORT_FAIL = "pass", "fail", "ort_fail"


@dataclass
class CaseResult:
    case: str
    status: str  # PASS | FAIL | ORT_FAIL
    stage: str = ""  # where it stopped: load_data | ort_load | ort_run | ort_compare | optimize | save | hone_load | hone_run | hone_compare
    message: str = ""
    pass_errors: list[str] = field(default_factory=list)  # "pass: error" for passes that raised

    def line(self) -> str:
        return f"{self.case} [{self.stage}] {self.message}"


@dataclass
class SuiteResult:
    cases_total: int
    ort_pass: int
    hone_pass: int
    failures: list[CaseResult]
    ort_fail_by_stage: dict[str, int]
    pass_errors: dict[str, list[str]]  # case -> passes that raised inside the pipeline

    @classmethod
    def of(cls, results: Sequence[CaseResult]) -> "SuiteResult":
        ort_fail_by_stage: dict[str, int] = {}
        for result in results:
            if result.status == ORT_FAIL:
                ort_fail_by_stage[result.stage] = ort_fail_by_stage.get(result.stage, 0) + 1
        return cls(
            cases_total=len(results),
            ort_pass=sum(1 for r in results if r.status != ORT_FAIL),
            hone_pass=sum(1 for r in results if r.status == PASS),
            failures=[r for r in results if r.status == FAIL],
            ort_fail_by_stage=dict(sorted(ort_fail_by_stage.items())),
            pass_errors={r.case: r.pass_errors for r in results if r.pass_errors},
        )


def case_dirs(root: Path = NODE_DATA_DIR) -> list[Path]:
    """Every case folder holding a model.onnx, sorted by name."""
    return sorted(p.parent for p in root.glob("*/model.onnx"))


def run_cases(dirs: Iterable[Path]) -> list[CaseResult]:
    """``run_case`` for each folder, in order (about 30 ms a case on one core)."""
    return [run_case(d) for d in dirs]


def run_case(case_dir: Path) -> CaseResult:
    """Run one case: the original on onnxruntime, then hone's output; see the module docstring."""
    case = case_dir.name
    model_path = case_dir / "model.onnx"
    try:
        proto = onnx.load(str(model_path))
        data_sets = _load_data_sets(case_dir, proto)
    except Exception as exc:  # no data to compare with: nothing onnxruntime (or hone) can pass
        return CaseResult(case, ORT_FAIL, "load_data", _first_line(exc))
    input_names = [value.name for value in proto.graph.input]

    problem = _run_and_compare(model_path, input_names, data_sets)
    if problem is not None:
        stage, message = problem
        return CaseResult(case, ORT_FAIL, "ort_" + stage, message)

    logging.disable(logging.WARNING)  # the pipeline warns about skipped passes; we record them
    try:
        optimized, report = hone.optimize(str(model_path), target="generic", verify=False)
    except Exception as exc:
        return CaseResult(case, FAIL, "optimize", f"{type(exc).__name__}: {_first_line(exc)}")
    finally:
        logging.disable(logging.NOTSET)
    pass_errors = [f"{p.name}: {p.message}" for p in report.passes if p.status == "failed"]
    with tempfile.TemporaryDirectory(prefix="hone-node-") as folder:
        try:
            saved = optimized.save(Path(folder) / "optimized.onnx")
        except Exception as exc:
            return CaseResult(case, FAIL, "save", f"{type(exc).__name__}: {_first_line(exc)}", pass_errors)
        problem = _run_and_compare(saved, input_names, data_sets)
    if problem is not None:
        stage, message = problem
        steps = ", ".join(p.name for p in report.passes if p.status == "applied")
        return CaseResult(case, FAIL, "hone_" + stage, f"{message} (passes applied: {steps})", pass_errors)
    return CaseResult(case, PASS, "", "", pass_errors)


DataSet = tuple[list[Any], list[Any]]  # (inputs, expected outputs)


def _load_data_sets(case_dir: Path, proto: onnx.ModelProto) -> list[DataSet]:
    data_sets = []
    for folder in sorted(case_dir.glob("test_data_set_*")):
        inputs = [
            _load_value(folder / f"input_{i}.pb", proto.graph.input[i].type)
            for i in range(len(list(folder.glob("input_*.pb"))))
        ]
        outputs = [
            _load_value(folder / f"output_{i}.pb", proto.graph.output[i].type)
            for i in range(len(list(folder.glob("output_*.pb"))))
        ]
        data_sets.append((inputs, outputs))
    if not data_sets:
        raise ValueError("no test_data_set_* folder")
    return data_sets


def _load_value(path: Path, type_proto: onnx.TypeProto) -> Any:
    """A .pb file as onnx's runner reads it: by the graph value's type (tensor, sequence, optional)."""
    content = path.read_bytes()
    if type_proto.HasField("sequence_type"):
        sequence = onnx.SequenceProto()
        sequence.ParseFromString(content)
        return numpy_helper.to_list(sequence)
    if type_proto.HasField("optional_type"):
        optional = onnx.OptionalProto()
        optional.ParseFromString(content)
        return numpy_helper.to_optional(optional)
    if type_proto.HasField("tensor_type"):
        tensor = onnx.TensorProto()
        tensor.ParseFromString(content)
        return numpy_helper.to_array(tensor)
    raise ValueError(f"{path.name}: values of type {type_proto.WhichOneof('value')} are not supported")


def _run_and_compare(model_path: Path, input_names: list[str], data_sets: list[DataSet]) -> tuple[str, str] | None:
    """None when ``model_path`` reproduces every data set; else (stage, message without the path)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 4
    try:
        session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        return "load", _first_line(exc).replace(str(model_path), model_path.name)
    raw_outputs = any(_is_raw_type(o.type) for o in session.get_outputs())
    for index, (inputs, expected) in enumerate(data_sets):
        feeds = {name: _ort_input(value, as_ort_value=raw_outputs) for name, value in zip(input_names, inputs)}
        try:
            if raw_outputs:
                outputs = [_from_ort_value(v) for v in session.run_with_ort_values(None, feeds)]
            else:
                outputs = session.run(None, feeds)
        except Exception as exc:
            return "run", f"data set {index}: {_first_line(exc)}"
        try:
            _assert_similar(expected, outputs)
        except AssertionError as exc:
            return "compare", f"data set {index}: {' '.join(str(exc).split())[:300]}"
    return None


# Element types numpy lacks, with their bits per element: they go through raw bytes.
_RAW_BITS = {
    onnx.TensorProto.BFLOAT16: 16, onnx.TensorProto.FLOAT8E4M3FN: 8, onnx.TensorProto.FLOAT8E4M3FNUZ: 8,
    onnx.TensorProto.FLOAT8E5M2: 8, onnx.TensorProto.FLOAT8E5M2FNUZ: 8, onnx.TensorProto.FLOAT8E8M0: 8,
    onnx.TensorProto.UINT4: 4, onnx.TensorProto.INT4: 4, onnx.TensorProto.FLOAT4E2M1: 4,
    onnx.TensorProto.UINT2: 2, onnx.TensorProto.INT2: 2,
}
_RAW_TYPE_NAMES = {
    "bfloat16", "float8e4m3fn", "float8e4m3fnuz", "float8e5m2", "float8e5m2fnuz", "float8e8m0",
    "uint4", "int4", "float4e2m1", "uint2", "int2",
}
_NUMPY_LACKS = {np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t)) for t in _RAW_BITS}


def _is_raw_type(ort_type: str) -> bool:
    return ort_type.startswith("tensor(") and ort_type[len("tensor("):-1] in _RAW_TYPE_NAMES


def _ort_input(value: Any, *, as_ort_value: bool) -> Any:
    """A feed for onnxruntime: ml_dtypes arrays become OrtValues holding their ONNX bytes (sub-byte
    types packed, lowest bits first); numpy arrays too when ``as_ort_value`` (run_with_ort_values)."""
    if not isinstance(value, np.ndarray):
        return value
    if value.dtype not in _NUMPY_LACKS:
        return ort.OrtValue.ortvalue_from_numpy(value) if as_ort_value else value
    element_type = onnx.helper.np_dtype_to_tensor_dtype(value.dtype)
    bits = _RAW_BITS[element_type]
    raw = np.ascontiguousarray(value).reshape(-1).view(np.uint16 if bits == 16 else np.uint8)
    if bits < 8:
        per_byte = 8 // bits
        codes = np.pad(raw & ((1 << bits) - 1), (0, -raw.size % per_byte))
        raw = np.zeros(codes.size // per_byte, np.uint8)
        for k in range(per_byte):
            raw |= codes[k::per_byte] << (k * bits)
    ort_value = ort.OrtValue.ortvalue_from_shape_and_type(list(value.shape), element_type)
    assert ort_value.tensor_size_in_bytes() == raw.nbytes, (ort_value.tensor_size_in_bytes(), raw.nbytes)
    ctypes.memmove(ort_value.data_ptr(), raw.ctypes.data, raw.nbytes)
    return ort_value


def _from_ort_value(ort_value: ort.OrtValue) -> Any:
    """An output OrtValue -> numpy; ml_dtypes arrays for the element types numpy lacks."""
    if not ort_value.is_tensor() or ort_value.element_type() not in _RAW_BITS:
        return ort_value.numpy()
    element_type = ort_value.element_type()
    bits = _RAW_BITS[element_type]
    shape = tuple(ort_value.shape())
    count = int(np.prod(shape, dtype=np.int64))
    raw = np.frombuffer(ctypes.string_at(ort_value.data_ptr(), ort_value.tensor_size_in_bytes()), np.uint8)
    if bits < 8:
        per_byte = 8 // bits
        raw = np.stack([(raw >> (k * bits)) & ((1 << bits) - 1) for k in range(per_byte)], axis=-1)
        raw = raw.reshape(-1)[:count].astype(np.uint8)
    return raw.view(onnx.helper.tensor_dtype_to_np_dtype(element_type)).reshape(shape)


def _assert_similar(expected: Sequence[Any], outputs: Sequence[Any]) -> None:
    """onnx.backend.test.runner's assert_similar_outputs, plus absent optionals (None)."""
    assert len(outputs) == len(expected), f"{len(outputs)} outputs, expected {len(expected)}"
    for index, (ref, out) in enumerate(zip(expected, outputs)):
        if ref is None or out is None:
            assert ref is None and out is None, f"output {index}: {out!r}, expected {ref!r}"
        elif isinstance(ref, (list, tuple)):
            assert isinstance(out, (list, tuple)), f"output {index}: {type(out).__name__}, expected a sequence"
            _assert_similar(ref, out)
        else:
            out = np.asarray(out)
            np.testing.assert_array_equal(out.shape, ref.shape, err_msg=f"output {index} has the wrong shape")
            if ref.dtype == object:
                np.testing.assert_array_equal(out, ref, err_msg=f"output {index}")
            else:
                np.testing.assert_equal(out.dtype, ref.dtype, err_msg=f"output {index} has the wrong dtype")
                np.testing.assert_allclose(out, ref, rtol=RTOL, atol=ATOL, err_msg=f"output {index}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]
