"""Export to fast engines: ONNX per stage (`stages`, `onnx_export`), a validated `manifest`, INT8 QDQ
calibration (`calibration`, `quantize`) and TensorRT engine builds (`engine`). Heavy imports stay inside functions."""
