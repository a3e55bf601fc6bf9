from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from hwnas.cli._console import console
from hwnas.cli._types import positive_int


def export(
    source: str = typer.Argument(..., help="A run directory of hwnas search, or an architecture string."),
    fmt: str = typer.Option("onnx", "--format", "-f", help="onnx, tflite or tensorrt."),
    out: Path = typer.Option(..., "--out", "-o", help="Output file, or a folder (no suffix): <arch id>.<ext> in it."),
    weights: Path = typer.Option(None, "--weights", "-w",
                                 help="State_dict (.pt read with weights_only, or .safetensors) (default: the run's)."),
    classes: int = typer.Option(None, "--classes", parser=positive_int,
                                help="Classifier size for an ARCH exported without weights (default: the space's)."),
    precision: str = typer.Option("fp32", "--precision",
                                  help="fp32; int8 (ONNX QDQ or full-integer TFLite, quantized from calibration "
                                       "images; or a TensorRT engine); fp16 (TensorRT)."),
    data: str = typer.Option(None, "--data", help="INT8: the dataset whose training split calibrates "
                                                  "(default: the run's)."),
    calibration_images: int = typer.Option(256, "--calibration-images", parser=positive_int,
                                           help="INT8: how many training images calibrate the ranges."),
    device: str = typer.Option(None, "--device", "-d", help="INT8: the device whose quantization scheme the "
                                                            "model takes (default: cpu-int8 for ONNX, "
                                                            "cpu-tflite-int8 for TFLite)."),
    trtexec: str = typer.Option("trtexec", "--trtexec", help="trtexec executable (TensorRT engines)."),
) -> None:
    """Export a searched network as ONNX, TFLite or a TensorRT engine; parity with PyTorch is checked."""
    from hwnas.deploy.export import export as run_export
    from hwnas.deploy.export import export_calibration, resolve_source

    src = resolve_source(source, weights, classes)
    calibration = export_calibration(src, fmt, precision, data, calibration_images)
    result = run_export(src, fmt, out, precision=precision, trtexec=trtexec, calibration=calibration, device=device)
    console.print(f"wrote {escape(str(result.path))} ({result.format}, {escape(result.arch)})")
    if result.parity is not None:
        console.print(f"  parity with PyTorch: {escape(result.parity.describe())}")
    for note in result.notes:
        console.print(f"  {escape(note)}")
