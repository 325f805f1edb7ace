"""The LLaVA-JSON training set, read lazily, with a visible bad-sample policy.

A sample that cannot be used (missing or broken image, malformed conversation, tag/image mismatch,
longer than the budget) comes back as a `SkippedSample` carrying its id and reason; the collator
records it. Nothing is silently replaced by another sample, unlike the original.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Dataset

from llava.data.image_files import ImageStamp, UnusableImage, load_rgb
from llava.data.images import ProcessedImage, process_sample_images
from llava.data.record_checks import conversation_fault, id_faults, image_paths, length_fault
from llava.data.templates import IMAGE_TAG, TemplateError, expand_image_tokens, render_conversation
from llava.errors import KitError
from llava.typed_config import read_document


@dataclass
class SkippedSample:
    sample_id: str
    index: int
    reason: str


def load_records(path: str | Path) -> list[dict]:
    """Read a LLaVA JSON list; errors name the file and the offending entry."""
    records = read_document(path, f"data file {path} does not exist", as_json=True)
    if not isinstance(records, list):
        raise KitError(f"{path}: expected a JSON list of samples, got {type(records).__name__}")
    for i, record in enumerate(records):
        if not isinstance(record, dict) or "conversations" not in record:
            raise KitError(f"{path}: entry {i} (id {record.get('id') if isinstance(record, dict) else '?'}) has no 'conversations'")
    duplicates = sorted({str(records[i]["id"]) for i, reason in id_faults(records).items() if reason == "duplicate id"})
    if duplicates:  # skips.jsonl and resume bookkeeping go by id: two samples may not share one
        shown = ", ".join(duplicates[:5]) + (f" and {len(duplicates) - 5} more" if len(duplicates) > 5 else "")
        raise KitError(f"{path}: {len(duplicates)} sample ids are used more than once ({shown}); give each sample its "
                       f"own id, or run `llava-kit prepare verify {Path(path).parent}` (it quarantines the repeats)")
    return records


class ConversationDataset(Dataset):
    def __init__(self, records: list[dict], image_folder: str | Path, tokenizer, pipeline, *,
                 template: str, system_prompt: str, label_mode: str, max_length: int,
                 verified_images: dict[str, ImageStamp] | None = None):
        self.records = records
        self.image_folder = Path(image_folder)
        self.tokenizer = tokenizer
        self.pipeline = pipeline
        self.template = template
        self.system_prompt = system_prompt
        self.label_mode = label_mode
        self.max_length = max_length
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TAG)
        self.verified_images = verified_images  # what `prepare verify` read: a changed image is skipped

    def __len__(self) -> int:
        return len(self.records)

    def sample_id(self, index: int) -> str:
        return str(self.records[index].get("id", index))

    def modality_lengths(self) -> list[int]:
        """The original's sampler lengths: word count, negative for text-only samples."""
        out = []
        for record in self.records:
            words = max(1, sum(len(str(t.get("value", "")).split()) for t in record.get("conversations") or []))
            out.append(words if record.get("image") else -words)
        return out

    def __getitem__(self, index: int):
        record = self.records[index]
        try:
            return self._build(record)
        except (TemplateError, OSError, ValueError, SyntaxError, KeyError) as err:
            return SkippedSample(self.sample_id(index), index, _reason(err))

    def _build(self, record: dict) -> dict:
        problem = conversation_fault(record)
        if problem:
            raise TemplateError(problem)
        rendered = render_conversation(record["conversations"], self.template, self.tokenizer,
                                       system_prompt=self.system_prompt, label_mode=self.label_mode)
        processed = load_sample_images(record, self.image_folder, self.pipeline, self.verified_images)
        item = image_item(processed)
        counts = [image.num_tokens for image in processed]
        ids, labels = expand_image_tokens(rendered.input_ids, rendered.labels, self.image_token_id, counts)
        too_long = length_fault(len(ids), self.max_length)
        if too_long:
            raise TemplateError(too_long)
        if all(label < 0 for label in labels):
            raise TemplateError("no supervised tokens")
        return {**item, "input_ids": ids, "labels": labels}


def load_sample_images(record: dict, image_folder: Path, pipeline,
                       verified: dict[str, ImageStamp] | None = None) -> list[ProcessedImage]:
    """Open and process the record's images (none, one, or several in pad mode); with `verified`, an image
    not as `prepare verify` read it is an UnusableImage (a ValueError: the sample is skipped)."""
    opened = []
    for name in image_paths(record):
        stamp = verified.get(name) if verified is not None else None
        if verified is not None and stamp is None:
            raise TemplateError(f"image {name} is not in the verified dataset's image_digests.tsv: "
                                "run `llava-kit prepare verify` on the dataset folder again")
        opened.append(load_rgb(Path(image_folder) / name, stamp))
    return process_sample_images(pipeline, opened) if opened else []


def image_item(processed: list[ProcessedImage]) -> dict:
    """The dataset item's image keys: one image flat (pixel_values, image_size), several as `images` rows."""
    if not processed:
        return {}
    if len(processed) == 1:
        return {"pixel_values": processed[0].pixel_values, "image_size": processed[0].image_size}
    return {"images": [{"pixel_values": p.pixel_values, "image_size": p.image_size} for p in processed]}


def _reason(err: Exception) -> str:
    if isinstance(err, FileNotFoundError):
        return f"missing image {err.filename}"
    if isinstance(err, (TemplateError, UnusableImage)):
        return str(err)
    return f"unreadable image or record: {type(err).__name__}: {err}"
