"""The OpenVINO engine: the IR compiled once for one device, u8 tiles in, p(damaged) out.

Scaling to [0, 1], the u8->f32 conversion, replicating the gray tile to 3 channels for an RGB
model, resizing a tile of another size to the model's input and the NHWC->NCHW transpose of a
PyTorch-exported model are all part of the compiled graph (``PrePostProcessor``), so the host
only hands over the uint8 gray tiles it already has. The batch dimension is dynamic: one
compiled model serves a single 128x128 image and a 12 MP frame cut into hundreds of tiles.

Importing this module imports ``openvino`` (never ``tensorflow``); the factory imports it only
when the OpenVINO engine is wanted, and treats an ImportError as "engine unavailable".
"""

from __future__ import annotations

import atexit
import logging
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from queue import Empty, SimpleQueue

import numpy as np
import openvino as ov
import openvino.opset13 as ops
import openvino.properties as props
import openvino.properties.hint as hints
from openvino.preprocess import PrePostProcessor, ResizeAlgorithm

from agent.core.errors import EngineUnavailable, InferenceError, ModelError
from models.base import Classifier
from models.card import ModelCard

log = logging.getLogger(__name__)

#: devices removed from OpenVINO: a config written for old hardware must not crash
RETIRED_DEVICES = {
    "MYRIAD": "MYRIAD (Intel Movidius NCS/NCS2) was removed from OpenVINO in 2023.0; "
    "it needs OpenVINO <= 2022.3 LTS",
    "HDDL": "HDDL (Vision Accelerator Design with Movidius VPUs) was removed from OpenVINO "
    "in 2023.0; it needs OpenVINO <= 2022.3 LTS",
}
#: devices that are not hardware but dispatch to other devices (checked by compiling)
VIRTUAL_DEVICES = ("AUTO", "MULTI", "HETERO", "BATCH")

_PRECISION_TYPES = {"f32": ov.Type.f32, "bf16": ov.Type.bf16, "f16": ov.Type.f16}
_TYPE_NAMES = {"f32": "f32", "bf16": "bf16", "f16": "f16", "i8": "int8", "u8": "int8"}

_core: ov.Core | None = None


def core() -> ov.Core:
    """One ``ov.Core`` per process: plugins load once."""
    global _core
    if _core is None:
        _core = ov.Core()
    return _core


def device_skip_reason(device: str, available: list[str]) -> str | None:
    """Why ``device`` cannot be used here, or None when it is worth trying to compile."""
    base = device.split(".")[0].split(":")[0]
    if base in RETIRED_DEVICES:
        return RETIRED_DEVICES[base]
    if base in VIRTUAL_DEVICES:
        return None
    if device in available or any(a.split(".")[0] == device for a in available):
        return None
    return f"{device} is not among the available OpenVINO devices {available}"


def precision_name(t) -> str:
    name = str(getattr(t, "get_type_name", lambda: t)())
    name = name.replace("<Type: '", "").replace("'>", "")
    aliases = {"float32": "f32", "bfloat16": "bf16", "float16": "f16", "undefined": "auto"}
    name = aliases.get(name, name)
    return _TYPE_NAMES.get(name, name)


def ir_kind(card: ModelCard, precision: str) -> str:
    """Which IR of the card runs: the INT8 one when asked for, or for ``auto`` when the card
    shows it reproduces the float IR (:attr:`ModelCard.int8_verified`). On this project's CPU it
    runs 1.7x the bf16 throughput (docs/benchmarks.md); the float IR stays for f32/bf16/f16."""
    if precision == "int8":
        return "openvino_int8"
    if precision == "auto":
        why = card.int8_unverified_reason
        if why is None:
            return "openvino_int8"
        if card.has("openvino_int8"):
            log.warning("model.precision auto runs the float IR, not the INT8 one: %s", why)
    return "openvino"


class OpenVinoClassifier(Classifier):
    """The card's IR compiled for one device. Raises EngineUnavailable if it cannot compile."""

    engine = "openvino"

    def __init__(
        self,
        card: ModelCard,
        device: str = "CPU",
        precision: str = "auto",
        cache_dir: Path | None = None,
        performance_hint: str = "LATENCY",
    ):
        self.card = card
        self.input_px = card.input_px
        kind = ir_kind(card, precision)
        if precision == "int8" and not card.has(kind):
            raise ModelError(f"{card.dir}: model.precision is int8 but the card lists no INT8 IR")
        xml = card.path_for(kind)  # verifies the sha256 of .xml and .bin
        c = core()
        model = c.read_model(str(xml))
        self._check_io(model, xml)
        model = self._with_preprocessing(model)
        config: dict = {hints.performance_mode: getattr(hints.PerformanceMode, performance_hint)}
        if precision in _PRECISION_TYPES:
            config[hints.inference_precision] = _PRECISION_TYPES[precision]
        elif kind == "openvino_int8":
            # The INT8 IR keeps its first convolution and some ops in float; left to the
            # plugin they run in bf16 on AMX CPUs, which doubled its |dp| to float (0.013 vs
            # the 0.007 the card measured in f32). f32 there keeps the card's agreement true.
            config[hints.inference_precision] = ov.Type.f32
        if cache_dir is not None:
            cache_dir.mkdir(parents=True, exist_ok=True)
            config[props.cache_dir] = str(cache_dir)
        try:
            self.compiled = c.compile_model(model, device, config)
        except RuntimeError as exc:
            raise EngineUnavailable(f"OpenVINO cannot compile the model for {device}: {_first_line(exc)}") from exc
        self.device = self._execution_device(device)
        self.precision = "int8" if kind == "openvino_int8" else self._effective_precision(precision)
        self.requested_device = device
        self._request = self.compiled.create_infer_request()
        self._queue: ov.AsyncInferQueue | None = None
        self._callback_freed: _Freed | None = None
        _open.add(self)

    def _check_io(self, model: ov.Model, xml: Path) -> None:
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise ModelError(
                f"{xml}: expected one input and one output, got {len(model.inputs)} and {len(model.outputs)}"
            )
        shape = model.input(0).get_partial_shape()
        expected = _model_dims(self.card)
        if shape.rank.get_length() != 4 or [str(d) for d in list(shape)[1:]] != [str(d) for d in expected]:
            raise ModelError(
                f"{xml}: input shape {shape} is not [N,{','.join(map(str, expected))}] "
                f"({self.card.layout}) as the card says"
            )
        out = model.output(0).get_partial_shape()
        width = str(self.card.classes)
        if out.rank.is_static and out.rank.get_length() > 0 and str(list(out)[-1]) not in (width, "?"):
            what = "one probability per image" if width == "1" else f"{width} class probabilities per image"
            raise ModelError(f"{xml}: output shape {out} is not {what} as the card says")

    def _with_preprocessing(self, model: ov.Model) -> ov.Model:
        px, ch = self.card.input_px, self.card.channels
        # A dynamic batch: one compiled model for 1 tile or a whole frame of tiles.
        model.reshape({model.input(0).get_any_name(): ov.PartialShape([-1, *_model_dims(self.card)])})
        ppp = PrePostProcessor(model)
        # Gray u8 tiles of any square size: the steps below make them what the model takes.
        ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC")).set_shape(
            ov.PartialShape([-1, -1, -1, 1])
        )
        ppp.input().model().set_layout(ov.Layout(self.card.layout))
        steps = ppp.input().preprocess().convert_element_type(ov.Type.f32)
        if abs(self.card.scale - 1.0) > 1e-12:
            steps.scale(1.0 / self.card.scale)  # u8 * scale, e.g. /255, inside the graph
        if ch == 3:
            steps.custom(lambda node: ops.concat([node, node, node], 3).output(0))
        # Identity for tiles already of the input size; the TensorFlow engine resizes the same way.
        steps.resize(ResizeAlgorithm.RESIZE_LINEAR, px, px)
        ppp.output().tensor().set_element_type(ov.Type.f32)
        return ppp.build()

    def _execution_device(self, requested: str) -> str:
        try:
            devices = list(self.compiled.get_property(props.execution_devices))
        except RuntimeError:
            return requested
        actual = ",".join(devices) or requested
        return f"{requested}:{actual}" if requested.split(":")[0] in VIRTUAL_DEVICES else actual

    def _effective_precision(self, requested: str) -> str:
        # Read back what the plugin chose: on CPUs with AVX512-BF16/AMX, "auto" means bf16.
        try:
            name = precision_name(self.compiled.get_property(hints.inference_precision))
        except RuntimeError:
            name = "auto"
        if name != "auto":
            return name
        # AUTO/MULTI do not expose it: ask the device they picked (when there is one).
        if requested != "auto":
            return requested
        devices = self.device.split(":")[-1].split(",")
        if len(devices) == 1:
            try:
                return precision_name(core().get_property(devices[0], hints.inference_precision))
            except RuntimeError:
                pass
        return "auto"

    def predict(self, tiles: np.ndarray) -> np.ndarray:
        x = _gray_nhwc(tiles)
        try:
            out = self._request.infer({0: x})
        except RuntimeError as exc:
            raise InferenceError(f"OpenVINO inference failed on {self.device}: {_first_line(exc)}") from exc
        return self.card.p_damaged(out[self.compiled.output(0)], len(x))

    def predict_async(self, batches: list[np.ndarray]) -> list[np.ndarray]:
        """Run the batches on an ``AsyncInferQueue`` so the device's streams overlap them."""
        if len(batches) <= 1:
            return [self.predict(b) for b in batches]
        return self.start(batches)()

    def start(self, batches: list[np.ndarray]) -> Callable[[], list[np.ndarray]]:
        """Queue the batches on the ``AsyncInferQueue`` and return their waiter.

        ``start_async`` returns as soon as a request is free, so a caller that starts the next
        call before waiting for this one keeps every stream busy. Each call's results come
        back through its own job, whatever else is in the queue.
        """
        if self._queue is None:
            self._queue = ov.AsyncInferQueue(self.compiled, 0)  # 0: the plugin's optimal number
            callback = self._done  # a bound method of its own: the queue holds its only reference
            self._callback_freed = _Freed(callback)
            self._queue.set_callback(callback)
            del callback
        job = _Job(len(batches))
        try:
            for i, b in enumerate(batches):
                x = _gray_nhwc(b)
                self._queue.start_async({0: x}, (job, i))
        except RuntimeError as exc:
            raise InferenceError(f"OpenVINO async inference failed on {self.device}: {_first_line(exc)}") from exc
        return lambda: self._wait(job)

    def _done(self, request: ov.InferRequest, userdata: tuple[_Job, int]) -> None:
        # Runs on OpenVINO's thread: copy out, the request's buffer is reused.
        job, index = userdata
        out = request.get_output_tensor(0).data
        job.results[index] = self.card.p_damaged(out.copy(), out.shape[0])
        with job.lock:
            job.left -= 1
            if job.left == 0:
                job.done.set()

    def _wait(self, job: _Job) -> list[np.ndarray]:
        # A failed request may never call back: past a grace time, wait for the whole queue,
        # which raises the request's error (or shows the result is missing).
        if not job.done.wait(timeout=_CALLBACK_GRACE_S):
            queue = self._queue
            if queue is None:  # closed under it (the engine was replaced by a fallback)
                raise InferenceError(f"OpenVINO engine on {self.device} was closed with requests in flight")
            try:
                queue.wait_all()
            except RuntimeError as exc:
                raise InferenceError(
                    f"OpenVINO async inference failed on {self.device}: {_first_line(exc)}"
                ) from exc
        if any(r is None for r in job.results):
            raise InferenceError(f"OpenVINO async inference on {self.device} returned no result")
        return job.results  # type: ignore[return-value]

    def close(self) -> None:
        """Release the queue, the request and the compiled model, in that order, once no
        OpenVINO thread is left in Python. Idempotent; run at exit for an engine left open.

        The order keeps the exit status. OpenVINO's threads take the GIL twice: to run the
        callback, and to free the callback when the last request holding it lets it go, which
        can be a worker's copy, after the request counts as done. A thread that asks for the
        GIL once the interpreter is finalizing is ended by CPython with ``pthread_exit``, and
        that unwinding through OpenVINO's ``noexcept`` frames aborts the process ("terminate
        called without an active exception", exit 134, about 1 run in 12 of
        ``skysift classify``). So: ``wait_all`` for the callbacks, drop the queue, then wait
        until the callback has been freed, wherever that happened.
        """
        queue, self._queue = self._queue, None
        if queue is not None:
            try:
                queue.wait_all()  # releases the GIL while it waits
            except RuntimeError as exc:
                # The request's own waiter reports its error; closing must still release.
                log.debug("OpenVINO request failed before close on %s: %s", self.device, exc)
            del queue  # frees its requests, which refer to the compiled model
            freed, self._callback_freed = self._callback_freed, None
            if freed is not None and not freed.wait(_CALLBACK_FREE_S):
                log.warning("OpenVINO still holds its callback on %s after close", self.device)
        self._request = None  # type: ignore[assignment]
        self.compiled = None  # type: ignore[assignment]
        _open.discard(self)


def _model_dims(card: ModelCard) -> list[int]:
    """The model input's dimensions after the batch, in the card's layout."""
    px, ch = card.input_px, card.channels
    return [ch, px, px] if card.layout == "NCHW" else [px, px, ch]


def _gray_nhwc(tiles: np.ndarray) -> np.ndarray:
    """(N, S, S) uint8 gray tiles as the graph's (N, S, S, 1) input tensor."""
    n, h, w = tiles.shape[:3]
    return np.ascontiguousarray(tiles, dtype=np.uint8).reshape(n, h, w, 1)


#: how long a call's results may take before its waiter asks the queue for errors
_CALLBACK_GRACE_S = 2.0
#: how long close() waits for OpenVINO's thread to free the callback (microseconds, usually)
_CALLBACK_FREE_S = 5.0

#: engines not closed yet; closed at exit, before the interpreter starts to shut down
_open: weakref.WeakSet[OpenVinoClassifier] = weakref.WeakSet()


@atexit.register
def _close_open_engines() -> None:
    # atexit runs after the main thread returns and before finalization, while OpenVINO's
    # threads can still take the GIL to finish their callbacks (see OpenVinoClassifier.close).
    for clf in list(_open):
        clf.close()


class _Freed:
    """Tells when ``obj`` has been freed, whichever thread freed it.

    The weakref's callback is ``SimpleQueue.put``, a C function: the freeing thread runs no
    Python bytecode for it, so it cannot be made to give up the GIL and ask for it again.
    """

    __slots__ = ("_signal", "_ref")

    def __init__(self, obj: object):
        self._signal: SimpleQueue = SimpleQueue()
        self._ref = weakref.ref(obj, self._signal.put)

    def wait(self, timeout: float) -> bool:
        """Wait, without the GIL, until the object is freed; False if it is still alive."""
        try:
            self._signal.get(timeout=timeout)
        except Empty:
            return False
        return True


class _Job:
    """One :meth:`OpenVinoClassifier.start` call: its results as their requests complete."""

    __slots__ = ("results", "left", "lock", "done")

    def __init__(self, n: int):
        self.results: list[np.ndarray | None] = [None] * n
        self.left = n
        self.lock = threading.Lock()
        self.done = threading.Event()


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and not ln.startswith("Exception from")]
    return lines[-1] if lines else type(exc).__name__
