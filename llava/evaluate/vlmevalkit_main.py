"""Entry point the kit runs VLMEvalKit through: `python -m llava.evaluate.vlmevalkit_main <run.py args>`.

It runs VLMEvalKit's own, unmodified `vlmeval.run` as `__main__` (what `python run.py` does in a
checkout) after one step: `use_training_image_processor()`, so that `LLaVA_OneVision_HF`'s
`AutoProcessor.from_pretrained(ckpt)` builds the image processor the checkpoint was trained with
(transformers would pick its torchvision backend otherwise; llava/data/processor.py says why).
"""

from __future__ import annotations

import runpy
import sys

RUN_MODULE = "vlmeval.run"


def main(argv: list[str] | None = None) -> None:
    from llava.data.processor import use_training_image_processor

    use_training_image_processor()
    sys.argv = [RUN_MODULE, *(sys.argv[1:] if argv is None else argv)]
    runpy.run_module(RUN_MODULE, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
