"""Export to fast engines: ONNX per stage (`stages`, `onnx_export`), a validated `manifest`, the stages run in
ONNX Runtime (`onnx_run`: what calibration and the INT8 report run; the runtime backend wraps it), INT8 QDQ
calibration (`calibration`, `quantize`) and TensorRT engine builds (`engine`). Heavy imports stay inside functions."""
