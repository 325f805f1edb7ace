"""Test harness: the kit's VLMEvalKit launcher on a CPU box, recording what the model is given.

`python tests/vlmevalkit_cpu_run.py RECORD.pt <run.py args>` in the VLMEvalKit test venv. Only the
device/dtype choices of VLMEvalKit's `LLaVA_OneVision_HF` are redirected, here and nowhere else:
its float16 load (`torch_dtype=torch.float16`) and its `.to('cuda')` / `.to('cuda', torch.float16)`
moves become CPU/float32, because this box has no CUDA (and CPU float16 would not be the kit's
numbers). Everything else, run.py, the dataset, the prompt, the processor call, generation, the
judge, is VLMEvalKit's own code. Each `generate` call's prompt, input_ids and pixel_values are saved
to RECORD.pt for the test to compare with the kit's builtin backend.
"""

from __future__ import annotations

import atexit
import sys

import torch
from transformers import BatchFeature, LlavaOnevisionForConditionalGeneration, LlavaOnevisionProcessor

RECORD: list[dict] = []


def _cpu(device, dtype):
    cuda = device == "cuda" or getattr(device, "type", None) == "cuda"
    return ("cpu" if cuda else device), (torch.float32 if dtype is torch.float16 else dtype)


def _batch_to(original):
    def to(self, *args, **kwargs):
        device = args[0] if args else kwargs.pop("device", None)
        dtype = args[1] if len(args) > 1 else kwargs.pop("dtype", None)
        device, dtype = _cpu(device, dtype)
        return original(self, device, dtype=dtype) if dtype is not None else original(self, device)
    return to


def _model_to(original):
    def to(self, *args, **kwargs):
        if args and isinstance(args[0], (str, torch.device)):
            args = (_cpu(args[0], None)[0], *args[1:])
        return original(self, *args, **kwargs)
    return to


def _load_float32(original):
    def from_pretrained(cls, *args, **kwargs):
        for key in ("torch_dtype", "dtype"):
            if kwargs.get(key) is torch.float16:
                kwargs[key] = torch.float32
        return original.__func__(cls, *args, **kwargs)
    return classmethod(from_pretrained)


def _recording_call(original):
    def __call__(self, *args, **kwargs):
        RECORD.append({"prompt": kwargs.get("text")})
        return original(self, *args, **kwargs)
    return __call__


def _recording_generate(original):
    def generate(self, *args, **kwargs):
        RECORD[-1].update(input_ids=kwargs["input_ids"].clone(), pixel_values=kwargs["pixel_values"].clone(),
                          dtype=str(self.dtype), device=str(self.device))
        output = original(self, *args, **kwargs)
        RECORD[-1]["output_ids"] = output.clone()
        return output
    return generate


def install(record_path: str) -> None:
    BatchFeature.to = _batch_to(BatchFeature.to)
    model = LlavaOnevisionForConditionalGeneration
    model.to = _model_to(model.to)
    model.from_pretrained = _load_float32(model.from_pretrained)
    model.generate = _recording_generate(model.generate)
    LlavaOnevisionProcessor.__call__ = _recording_call(LlavaOnevisionProcessor.__call__)
    atexit.register(lambda: torch.save(RECORD, record_path))


if __name__ == "__main__":
    install(sys.argv[1])
    from llava.evaluate.vlmevalkit_main import main
    main(sys.argv[2:])
